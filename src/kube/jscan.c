/* Validating JSON pull scanner (see jscan.h).
 *
 * Flow: API server bytes -> framer -> [jscan] -> pod fields -> informer cache / CAS outcome.
 */
#include "jscan.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

void pc__js_init(pc__js *js, const char *p, size_t n)
{
    js->p = p;
    js->end = p + n;
    js->depth = 0;
    js->first = false;
    js->why = NULL;
}

static int bad(pc__js *js, const char *why)
{
    if (!js->why)
        js->why = why;
    js->p = js->end; /* every later call fails fast */
    return -EBADMSG;
}

static void ws(pc__js *js)
{
    while (js->p < js->end && (*js->p == ' ' || *js->p == '\n' || *js->p == '\r' || *js->p == '\t'))
        js->p++;
}

char pc__js_peek(pc__js *js)
{
    ws(js);
    if (js->why || js->p >= js->end)
        return 0;
    char c = *js->p;
    if (c == '-' || (c >= '0' && c <= '9'))
        return '0';
    if (c == '{' || c == '[' || c == '"' || c == 'n' || c == 't' || c == 'f')
        return c;
    return 0;
}

static int lit(pc__js *js, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(js->end - js->p) < n || memcmp(js->p, word, n) != 0)
        return bad(js, "bad literal");
    js->p += n;
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int hex4(pc__js *js, uint32_t *out)
{
    if (js->end - js->p < 4)
        return bad(js, "short \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(js->p[i]);
        if (h < 0)
            return bad(js, "bad \\u escape");
        v = v << 4 | (uint32_t)h;
    }
    js->p += 4;
    *out = v;
    return 0;
}

/* Scan a string at js->p ('"'); copy into out when out != NULL. Returns the decoded length
 * or an error; -EMSGSIZE leaves js after the string. */
static int str(pc__js *js, char *out, size_t cap)
{
    if (js->p >= js->end || *js->p != '"')
        return bad(js, "string expected");
    js->p++;
    size_t n = 0;
    bool too_long = false, nul = false;
    for (;;) {
        /* A run of bytes that stand for themselves, copied in one go: most strings of a pod
         * (names, labels, images, timestamps) have no escape at all. Byte at a time, this
         * function was a quarter of the informer's CPU samples in bench_kube; with runs a
         * kube-apiserver pod (fuzz/corpus/pod/seed-hand-apiserver-pod.json) scans in
         * ~6 us instead of ~10. */
        const char *run = js->p;
        while (js->p < js->end && *js->p != '"' && *js->p != '\\' && (unsigned char)*js->p >= 0x20)
            js->p++;
        size_t rl = (size_t)(js->p - run);
        if (rl) {
            if (out && !too_long) {
                if (n + rl >= cap)
                    too_long = true;
                else
                    memcpy(out + n, run, rl);
            }
            n += rl;
        }
        if (js->p >= js->end)
            return bad(js, "unterminated string");
        unsigned char c = (unsigned char)*js->p++;
        char enc[4];
        size_t k = 1;
        if (c == '"')
            break;
        if (c < 0x20)
            return bad(js, "control character in string");
        if (c != '\\') {
            enc[0] = (char)c;
        } else {
            if (js->p >= js->end)
                return bad(js, "unterminated escape");
            char e = *js->p++;
            switch (e) {
            case '"':
            case '\\':
            case '/':
                enc[0] = e;
                break;
            case 'b':
                enc[0] = '\b';
                break;
            case 'f':
                enc[0] = '\f';
                break;
            case 'n':
                enc[0] = '\n';
                break;
            case 'r':
                enc[0] = '\r';
                break;
            case 't':
                enc[0] = '\t';
                break;
            case 'u': {
                uint32_t cp;
                if (hex4(js, &cp))
                    return -EBADMSG;
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    uint32_t lo;
                    if (js->end - js->p < 2 || js->p[0] != '\\' || js->p[1] != 'u')
                        return bad(js, "lone surrogate");
                    js->p += 2;
                    if (hex4(js, &lo) || lo < 0xdc00 || lo > 0xdfff)
                        return bad(js, "bad surrogate pair");
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                    return bad(js, "lone surrogate");
                }
                /* A NUL cannot live inside a C string: "podclaim.io/phase\u0000x" would
                 * read as the phase label. The caller learns it (-EINVAL), never a
                 * shortened string. */
                nul |= cp == 0;
                if (cp < 0x80) {
                    enc[0] = (char)cp;
                } else if (cp < 0x800) {
                    enc[0] = (char)(0xc0 | cp >> 6);
                    enc[1] = (char)(0x80 | (cp & 0x3f));
                    k = 2;
                } else if (cp < 0x10000) {
                    enc[0] = (char)(0xe0 | cp >> 12);
                    enc[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
                    enc[2] = (char)(0x80 | (cp & 0x3f));
                    k = 3;
                } else {
                    enc[0] = (char)(0xf0 | cp >> 18);
                    enc[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
                    enc[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
                    enc[3] = (char)(0x80 | (cp & 0x3f));
                    k = 4;
                }
                break;
            }
            default:
                return bad(js, "bad escape");
            }
        }
        if (out && !too_long) {
            if (n + k >= cap) {
                too_long = true;
            } else {
                memcpy(out + n, enc, k);
            }
        }
        n += k;
    }
    if (out && cap)
        out[too_long || nul ? 0 : n] = '\0';
    if (too_long)
        return -EMSGSIZE;
    if (nul && out)
        return -EINVAL;
    return n > INT_MAX ? -EMSGSIZE : (int)n;
}

static int num(pc__js *js)
{
    const char *s = js->p;
    if (js->p < js->end && *js->p == '-')
        js->p++;
    if (js->p >= js->end || *js->p < '0' || *js->p > '9')
        return bad(js, "bad number");
    if (*js->p == '0')
        js->p++;
    else
        while (js->p < js->end && *js->p >= '0' && *js->p <= '9')
            js->p++;
    if (js->p < js->end && *js->p == '.') {
        js->p++;
        if (js->p >= js->end || *js->p < '0' || *js->p > '9')
            return bad(js, "bad number");
        while (js->p < js->end && *js->p >= '0' && *js->p <= '9')
            js->p++;
    }
    if (js->p < js->end && (*js->p == 'e' || *js->p == 'E')) {
        js->p++;
        if (js->p < js->end && (*js->p == '+' || *js->p == '-'))
            js->p++;
        if (js->p >= js->end || *js->p < '0' || *js->p > '9')
            return bad(js, "bad number");
        while (js->p < js->end && *js->p >= '0' && *js->p <= '9')
            js->p++;
    }
    return js->p > s ? 0 : bad(js, "bad number");
}

int pc__js_skip(pc__js *js)
{
    switch (pc__js_peek(js)) {
    case '"':
        return str(js, NULL, 0) < 0 ? -EBADMSG : 0;
    case '0':
        return num(js);
    case 'n':
        return lit(js, "null");
    case 't':
        return lit(js, "true");
    case 'f':
        return lit(js, "false");
    case '{': {
        int rc = pc__js_obj_begin(js);
        while (rc == 0 && (rc = pc__js_obj_key(js, NULL, 0)) == 1)
            rc = pc__js_skip(js);
        return rc;
    }
    case '[': {
        int rc = pc__js_arr_begin(js);
        while (rc == 0 && (rc = pc__js_arr_next(js)) == 1)
            rc = pc__js_skip(js);
        return rc;
    }
    default:
        return bad(js, js->p >= js->end ? "unexpected end of input" : "value expected");
    }
}

int pc__js_str(pc__js *js, char *out, size_t cap)
{
    if (pc__js_peek(js) != '"')
        return bad(js, "string expected");
    return str(js, out, cap);
}

int pc__js_int(pc__js *js, long long *out)
{
    if (pc__js_peek(js) != '0')
        return bad(js, "integer expected");
    const char *s = js->p;
    if (num(js))
        return -EBADMSG;
    long long v = 0;
    bool neg = *s == '-';
    for (const char *q = s + neg; q < js->p; q++) {
        if (*q < '0' || *q > '9' || v > (LLONG_MAX - 9) / 10)
            return bad(js, "integer expected");
        v = v * 10 + (*q - '0');
    }
    *out = neg ? -v : v;
    return 0;
}

int pc__js_obj_begin(pc__js *js)
{
    if (pc__js_peek(js) != '{')
        return bad(js, "object expected");
    if (++js->depth > PC__JS_MAX_DEPTH)
        return bad(js, "nesting too deep");
    js->p++;
    js->first = true;
    return 0;
}

int pc__js_obj_key(pc__js *js, char *key, size_t cap)
{
    bool first = js->first;
    js->first = false;
    ws(js);
    if (js->p >= js->end)
        return bad(js, "unterminated object");
    if (*js->p == '}') {
        js->p++;
        js->depth--;
        return 0;
    }
    if (!first) {
        if (*js->p != ',')
            return bad(js, "',' or '}' expected in object");
        js->p++;
        ws(js);
    }
    char tmp[1];
    int n = str(js, key ? key : tmp, key ? cap : sizeof(tmp));
    if (n == -EMSGSIZE || n == -EINVAL) {
        if (key && cap)
            key[0] = '\0';
    } else if (n < 0) {
        return -EBADMSG;
    }
    ws(js);
    if (js->p >= js->end || *js->p != ':')
        return bad(js, "':' expected");
    js->p++;
    return 1;
}

int pc__js_arr_begin(pc__js *js)
{
    if (pc__js_peek(js) != '[')
        return bad(js, "array expected");
    if (++js->depth > PC__JS_MAX_DEPTH)
        return bad(js, "nesting too deep");
    js->p++;
    js->first = true;
    return 0;
}

int pc__js_arr_next(pc__js *js)
{
    bool first = js->first;
    js->first = false;
    ws(js);
    if (js->p >= js->end)
        return bad(js, "unterminated array");
    if (*js->p == ']') {
        js->p++;
        js->depth--;
        return 0;
    }
    if (!first) {
        if (*js->p != ',')
            return bad(js, "',' or ']' expected in array");
        js->p++;
    }
    return 1;
}

int pc__js_end(pc__js *js)
{
    ws(js);
    if (js->why)
        return -EBADMSG;
    return js->p == js->end ? 0 : bad(js, "trailing bytes after the value");
}

static int metadata_rv(const char *p, size_t n, char *rv, size_t cap, bool prefix)
{
    pc__js js;
    char key[32];
    int found = -ENOENT, rc;
    pc__js_init(&js, p, n);
    if ((rc = pc__js_obj_begin(&js)))
        return rc;
    while ((rc = pc__js_obj_key(&js, key, sizeof(key))) == 1) {
        if (strcmp(key, "metadata") != 0 || pc__js_peek(&js) != '{') {
            if (pc__js_skip(&js))
                return -EBADMSG;
            continue;
        }
        pc__js_obj_begin(&js);
        while ((rc = pc__js_obj_key(&js, key, sizeof(key))) == 1) {
            if (strcmp(key, "resourceVersion") == 0 && pc__js_peek(&js) == '"')
                found = pc__js_str(&js, rv, cap);
            else if (pc__js_skip(&js))
                return -EBADMSG;
            if (found == -EBADMSG)
                return found;
            if (prefix && found > 0)
                return found; /* what follows may be cut off: not looked at */
        }
        if (rc < 0)
            return rc;
    }
    if (rc < 0)
        return rc;
    if (pc__js_end(&js))
        return -EBADMSG;
    return found;
}

int pc__js_metadata_rv(const char *p, size_t n, char *rv, size_t cap)
{
    return metadata_rv(p, n, rv, cap, false);
}

int pc__js_metadata_rv_prefix(const char *p, size_t n, char *rv, size_t cap)
{
    return metadata_rv(p, n, rv, cap, true);
}
