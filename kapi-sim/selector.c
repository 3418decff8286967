/* kapi-sim label and field selectors: parsed once per request or watch, then matched against
 * every candidate object (list scan, watch fan-out), so matching does no allocation.
 *
 * Grammar (k8s.io/apimachinery/pkg/labels): requirements separated by commas, each one of
 *   key | !key | key=v | key==v | key!=v | key in (v1,v2) | key notin (v1,v2)
 * Field selectors accept = == != on a fixed set of fields, like kube-apiserver for pods.
 */
#include "sim.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

typedef enum { OP_EXISTS, OP_NOT_EXISTS, OP_EQ, OP_NE, OP_IN, OP_NOTIN } sel_op;

typedef struct req {
    sel_op op;
    char *key;
    char **vals;
    size_t nvals;
} req;

struct ks_lsel {
    req *reqs;
    size_t n;
};

static void req_fini(req *r)
{
    free(r->key);
    for (size_t i = 0; i < r->nvals; i++)
        free(r->vals[i]);
    free(r->vals);
}

void ks_lsel_free(ks_lsel *sel)
{
    if (!sel)
        return;
    for (size_t i = 0; i < sel->n; i++)
        req_fini(&sel->reqs[i]);
    free(sel->reqs);
    free(sel);
}

bool ks_lsel_empty(const ks_lsel *sel)
{
    return !sel || sel->n == 0;
}

static void skip_ws(const char **p)
{
    while (**p == ' ' || **p == '\t')
        (*p)++;
}

/* Label keys and values: [A-Za-z0-9._/-]; keys may carry a DNS prefix with '/'. */
static bool word_char(char c)
{
    return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-' || c == '/';
}

static char *read_word(const char **p)
{
    skip_ws(p);
    const char *b = *p;
    while (word_char(**p))
        (*p)++;
    return strndup(b, (size_t)(*p - b));
}

static bool push_val(req *r, char *v)
{
    char **nv = realloc(r->vals, (r->nvals + 1) * sizeof *nv);
    if (!nv) {
        free(v);
        return false;
    }
    r->vals = nv;
    r->vals[r->nvals++] = v;
    return true;
}

static bool keyword(const char **p, const char *kw)
{
    size_t n = strlen(kw);
    if (strncmp(*p, kw, n) == 0 && !word_char((*p)[n])) {
        *p += n;
        return true;
    }
    return false;
}

static bool parse_req(const char **p, req *r, ks_err *err, const char *whole)
{
    skip_ws(p);
    if (**p == '!') {
        (*p)++;
        r->op = OP_NOT_EXISTS;
        r->key = read_word(p);
        if (!r->key || !*r->key)
            goto bad;
        return true;
    }
    r->key = read_word(p);
    if (!r->key || !*r->key)
        goto bad;
    skip_ws(p);
    if (**p == ',' || **p == '\0') {
        r->op = OP_EXISTS;
        return true;
    }
    if ((*p)[0] == '!' && (*p)[1] == '=') {
        r->op = OP_NE;
        *p += 2;
    } else if ((*p)[0] == '=' && (*p)[1] == '=') {
        r->op = OP_EQ;
        *p += 2;
    } else if (**p == '=') {
        r->op = OP_EQ;
        *p += 1;
    } else if (keyword(p, "in")) {
        r->op = OP_IN;
    } else if (keyword(p, "notin")) {
        r->op = OP_NOTIN;
    } else {
        goto bad;
    }
    if (r->op == OP_EQ || r->op == OP_NE) {
        char *v = read_word(p);
        if (!v || !push_val(r, v))
            goto bad;
        return true;
    }
    skip_ws(p);
    if (**p != '(')
        goto bad;
    (*p)++;
    for (;;) {
        char *v = read_word(p);
        if (!v || !push_val(r, v))
            goto bad;
        skip_ws(p);
        if (**p == ',') {
            (*p)++;
            continue;
        }
        if (**p == ')') {
            (*p)++;
            return true;
        }
        goto bad;
    }
bad:
    ks_err_set(err, 400, "BadRequest",
               "unable to parse requirement: found '%.20s' at offset %zu of label selector %.200s",
               **p ? *p : "end of string", (size_t)(*p - whole), whole);
    return false;
}

ks_lsel *ks_lsel_parse(const char *s, ks_err *err)
{
    ks_lsel *sel = calloc(1, sizeof *sel);
    if (!sel) {
        ks_err_set(err, 500, "InternalError", "out of memory");
        return NULL;
    }
    if (!s)
        return sel;
    const char *p = s;
    skip_ws(&p);
    while (*p) {
        req *nr = realloc(sel->reqs, (sel->n + 1) * sizeof *nr);
        if (!nr) {
            ks_err_set(err, 500, "InternalError", "out of memory");
            goto fail;
        }
        sel->reqs = nr;
        req *r = &sel->reqs[sel->n++];
        memset(r, 0, sizeof *r);
        if (!parse_req(&p, r, err, s))
            goto fail;
        skip_ws(&p);
        if (*p == ',') {
            p++;
            skip_ws(&p);
            if (!*p) {
                ks_err_set(err, 400, "BadRequest", "label selector %.200s ends with ','", s);
                goto fail;
            }
        } else if (*p) {
            ks_err_set(err, 400, "BadRequest",
                       "unable to parse requirement: unexpected '%c' at offset %zu of label "
                       "selector %.200s",
                       *p, (size_t)(p - s), s);
            goto fail;
        }
    }
    return sel;
fail:
    ks_lsel_free(sel);
    return NULL;
}

static bool req_match(const req *r, const json_t *labels)
{
    const json_t *v = labels ? json_object_get(labels, r->key) : NULL;
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    switch (r->op) {
    case OP_EXISTS:
        return s != NULL;
    case OP_NOT_EXISTS:
        return s == NULL;
    case OP_EQ:
        return s && strcmp(s, r->vals[0]) == 0;
    case OP_NE:
        return !s || strcmp(s, r->vals[0]) != 0;
    case OP_IN:
    case OP_NOTIN: {
        bool found = false;
        for (size_t i = 0; s && i < r->nvals && !found; i++)
            found = strcmp(s, r->vals[i]) == 0;
        return r->op == OP_IN ? found : !found;
    }
    }
    return false;
}

bool ks_lsel_match(const ks_lsel *sel, const json_t *labels)
{
    if (!sel)
        return true;
    for (size_t i = 0; i < sel->n; i++)
        if (!req_match(&sel->reqs[i], labels))
            return false;
    return true;
}

/* ---- field selectors ---------------------------------------------------------------------- */

typedef struct freq {
    const char *path[2]; /* e.g. {"metadata","name"} */
    bool neg;
    char *val;
} freq;

struct ks_fsel {
    freq *reqs;
    size_t n;
};

static const char *const field_names[][2] = {
        {"metadata", "name"}, {"metadata", "namespace"}, {"status", "phase"}, {"spec", "nodeName"}};

void ks_fsel_free(ks_fsel *sel)
{
    if (!sel)
        return;
    for (size_t i = 0; i < sel->n; i++)
        free(sel->reqs[i].val);
    free(sel->reqs);
    free(sel);
}

ks_fsel *ks_fsel_parse(const char *s, ks_err *err)
{
    ks_fsel *sel = calloc(1, sizeof *sel);
    char *dup = s ? strdup(s) : NULL;
    if (!sel || (s && !dup)) {
        free(sel);
        free(dup);
        ks_err_set(err, 500, "InternalError", "out of memory");
        return NULL;
    }
    char *save = NULL;
    for (char *tok = dup ? strtok_r(dup, ",", &save) : NULL; tok;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (!*tok)
            continue;
        char *op = strpbrk(tok, "!=");
        if (!op) {
            ks_err_set(err, 400, "BadRequest",
                       "invalid field selector %.200s: '%.100s' has no operator", s, tok);
            goto fail;
        }
        bool neg = *op == '!';
        char *val = op + (neg ? 2 : (op[1] == '=' ? 2 : 1));
        if (neg && op[1] != '=') {
            ks_err_set(err, 400, "BadRequest", "invalid field selector %.200s", s);
            goto fail;
        }
        *op = '\0';
        int idx = -1;
        for (size_t i = 0; i < sizeof field_names / sizeof field_names[0]; i++) {
            char full[64];
            snprintf(full, sizeof full, "%s.%s", field_names[i][0], field_names[i][1]);
            if (strcmp(full, tok) == 0)
                idx = (int)i;
        }
        if (idx < 0) {
            ks_err_set(err, 400, "BadRequest", "field label not supported: %.100s", tok);
            goto fail;
        }
        freq *nr = realloc(sel->reqs, (sel->n + 1) * sizeof *nr);
        if (!nr)
            goto fail;
        sel->reqs = nr;
        freq *r = &sel->reqs[sel->n++];
        r->path[0] = field_names[idx][0];
        r->path[1] = field_names[idx][1];
        r->neg = neg;
        r->val = strdup(val);
        if (!r->val)
            goto fail;
    }
    free(dup);
    return sel;
fail:
    if (!err->code)
        ks_err_set(err, 500, "InternalError", "out of memory");
    free(dup);
    ks_fsel_free(sel);
    return NULL;
}

bool ks_fsel_match(const ks_fsel *sel, const json_t *obj)
{
    if (!sel)
        return true;
    for (size_t i = 0; i < sel->n; i++) {
        const freq *r = &sel->reqs[i];
        const json_t *v = json_object_get(json_object_get(obj, r->path[0]), r->path[1]);
        const char *s = json_is_string(v) ? json_string_value(v) : "";
        bool eq = strcmp(s, r->val) == 0;
        if (eq == r->neg)
            return false;
    }
    return true;
}
