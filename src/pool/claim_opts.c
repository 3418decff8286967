/* Checking a claim's options against the Kubernetes rules for what they become on the pod.
 *
 * Flow: callers -> [pc_pool_enqueue checks] -> pool -> CAS -> backend -> PATCH.
 *
 * A bad option used to travel to the backend, which dereferenced NULL arrays (a crash) or
 * sent a PATCH the API server answered 422 (a wasted write and a pod held for a round
 * trip). Checked once, on the producer's thread, before the claim is accepted.
 *
 * The rules (Kubernetes API conventions, apimachinery validation):
 *   - a label or annotation key is [prefix/]name: name 1..63 characters of [A-Za-z0-9-_.]
 *     beginning and ending alphanumeric; prefix, if any, a DNS subdomain (<= 253
 *     characters of [a-z0-9-.], labels of [a-z0-9-] beginning and ending alphanumeric);
 *   - a label value is empty or 1..63 characters of the name alphabet, alphanumeric at
 *     both ends (the target phase is the value of label podclaim.io/phase);
 *   - annotation values are free text, but keys and values of all annotations together
 *     stay within 256 KiB;
 *   - a container name is a DNS label (1..63 of [a-z0-9-], alphanumeric at both ends); an
 *     image is not empty (its syntax is the registry's business, not the API server's).
 */
#include <podclaim/podclaim.h>

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define K8S_NAME_MAX 63
#define K8S_PREFIX_MAX 253
#define K8S_ANNOTATIONS_MAX (256 * 1024)

static bool alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* Qualified-name part and label value alphabet: alphanumeric ends, [-_.] inside. */
static bool name_part(const char *s, size_t n)
{
    if (n == 0 || n > K8S_NAME_MAX || !alnum(s[0]) || !alnum(s[n - 1]))
        return false;
    for (size_t i = 1; i + 1 < n; i++)
        if (!alnum(s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return false;
    return true;
}

/* RFC 1123 label: lowercase alphanumeric ends, '-' inside. */
static bool dns_label(const char *s, size_t n)
{
    if (n == 0 || n > K8S_NAME_MAX || !lower_alnum(s[0]) || !lower_alnum(s[n - 1]))
        return false;
    for (size_t i = 1; i + 1 < n; i++)
        if (!lower_alnum(s[i]) && s[i] != '-')
            return false;
    return true;
}

static bool dns_subdomain(const char *s, size_t n)
{
    if (n == 0 || n > K8S_PREFIX_MAX)
        return false;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++)
        if (i == n || s[i] == '.') {
            if (!dns_label(s + start, i - start))
                return false;
            start = i + 1;
        }
    return true;
}

static bool qualified_key(const char *k)
{
    size_t n = strlen(k);
    const char *slash = memchr(k, '/', n);
    if (slash == NULL)
        return name_part(k, n);
    size_t pn = (size_t)(slash - k);
    return dns_subdomain(k, pn) && name_part(slash + 1, n - pn - 1);
}

static bool label_value(const char *v)
{
    size_t n = strlen(v);
    return n == 0 || name_part(v, n);
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

int pc_claim_opts_check(const pc_claim_opts *o, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (o == NULL)
        return 0;
    if ((o->n_images && o->images == NULL) || (o->n_labels && o->labels == NULL) ||
        (o->n_annotations && o->annotations == NULL))
        return fail(err, errlen, "claim options: an array is NULL with a non-zero count");
    for (size_t i = 0; i < o->n_images; i++) {
        const pc_kv *kv = &o->images[i];
        if (kv->key == NULL || !dns_label(kv->key, strlen(kv->key)))
            return fail(err, errlen, "image %zu: container name \"%.63s\" is not a DNS label", i,
                        kv->key ? kv->key : "(null)");
        if (kv->value == NULL || kv->value[0] == '\0')
            return fail(err, errlen, "image %zu: container %s: empty image", i, kv->key);
    }
    for (size_t i = 0; i < o->n_labels; i++) {
        const pc_kv *kv = &o->labels[i];
        if (kv->key == NULL || !qualified_key(kv->key))
            return fail(err, errlen, "label %zu: key \"%.80s\" is not a qualified name", i,
                        kv->key ? kv->key : "(null)");
        if (kv->value == NULL || !label_value(kv->value))
            return fail(err, errlen, "label %s: value \"%.80s\" is not a valid label value",
                        kv->key, kv->value ? kv->value : "(null)");
    }
    size_t total = 0;
    for (size_t i = 0; i < o->n_annotations; i++) {
        const pc_kv *kv = &o->annotations[i];
        if (kv->key == NULL || !qualified_key(kv->key))
            return fail(err, errlen, "annotation %zu: key \"%.80s\" is not a qualified name", i,
                        kv->key ? kv->key : "(null)");
        if (kv->value == NULL)
            return fail(err, errlen, "annotation %s: NULL value", kv->key);
        total += strlen(kv->key) + strlen(kv->value);
        if (total > K8S_ANNOTATIONS_MAX)
            return fail(err, errlen, "annotations: more than %d bytes together",
                        K8S_ANNOTATIONS_MAX);
    }
    if (o->target_phase && (o->target_phase[0] == '\0' || !label_value(o->target_phase)))
        return fail(err, errlen, "target phase \"%.80s\" is not a valid label value",
                    o->target_phase);
    return 0;
}
