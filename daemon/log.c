/* podclaimd logging (log.h). The level and format are set once at start-up, before any other
 * thread exists, and only read afterwards. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int log_level = PCD_INFO;
static bool log_json;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void pcd_log_setup(int level, bool json)
{
    log_level = level;
    log_json = json;
}

bool pcd_log_enabled(int level)
{
    return level <= log_level;
}

static void json_str(char *out, size_t len, size_t *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n && *o + 8 < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            out[(*o)++] = '\\';
            out[(*o)++] = (char)ch;
        } else if (ch < 0x20) {
            *o += (size_t)snprintf(out + *o, len - *o, "\\u%04x", ch);
        } else {
            out[(*o)++] = (char)ch;
        }
    }
}

/* logfmt -> {"k":"v",...}: keys are bare words; values bare or "quoted" with \" escapes. */
static void to_json(const char *in, char *out, size_t len)
{
    size_t o = 0;
    out[o++] = '{';
    const char *p = in;
    bool first = true;
    while (*p && o + 16 < len) {
        while (*p == ' ')
            p++;
        const char *k = p;
        while (*p && *p != '=' && *p != ' ')
            p++;
        size_t kn = (size_t)(p - k);
        if (!kn)
            break;
        const char *v = p;
        size_t vn = 0;
        char val[2048];
        if (*p == '=') {
            p++;
            if (*p == '"') {
                p++;
                while (*p && *p != '"' && vn + 1 < sizeof(val)) {
                    if (*p == '\\' && p[1])
                        p++;
                    val[vn++] = *p++;
                }
                if (*p == '"')
                    p++;
            } else {
                v = p;
                while (*p && *p != ' ' && vn + 1 < sizeof(val))
                    val[vn++] = *p++;
                (void)v;
            }
        }
        if (!first)
            out[o++] = ',';
        first = false;
        out[o++] = '"';
        json_str(out, len, &o, k, kn);
        out[o++] = '"';
        out[o++] = ':';
        out[o++] = '"';
        json_str(out, len, &o, val, vn);
        out[o++] = '"';
    }
    out[o++] = '}';
    out[o++] = '\n';
    out[o] = '\0';
}

static void emit(const char *line)
{
    char ts[40];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03ldZ", now.tv_nsec / 1000000);
    char full[4096], out[8192];
    snprintf(full, sizeof(full), "time=%s %s", ts, line);
    if (log_json)
        to_json(full, out, sizeof(out));
    else
        snprintf(out, sizeof(out), "%s\n", full);
    fwrite(out, 1, strlen(out), stderr);
}

void pcd_logf(int level, const char *fmt, ...)
{
    if (level > log_level)
        return;
    char line[3072];
    int n = snprintf(line, sizeof(line), "level=%s ",
                     level_names[level < 0   ? 0
                                 : level > 3 ? 3
                                             : level]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    emit(line);
}

void pcd_log_line(void *arg, int level, const char *line)
{
    (void)arg;
    if (level > log_level)
        return;
    emit(line);
}
