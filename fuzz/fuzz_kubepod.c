/* Fuzz target: the controllers' pod decoding (src/kube/kubepod.c, include/podclaim/kubepod.h):
 * pod summaries, watch event envelopes and LIST pages, as podclaimd's pool controller reads
 * them from the API server.
 *
 * The first byte picks the entry point; the rest is the text:
 *   0 mod 3: one pod object (pc_kube_pod_decode)
 *   1 mod 3: one watch line (pc_kube_watch_event_scan), its object decoded as a pod
 *   2 mod 3: one LIST page (pc_kube_list_scan), every item decoded as a pod
 *
 * Oracle: only the documented return codes; a pod accepted has a name and a namespace, every
 * string is non-NULL and NUL-terminated, a label or annotation looked up by its own key is
 * found, lists hold no NULL strings; spans lie inside the input; a refusal says why.
 */
#include "fuzz.h"

#include <podclaim/kubepod.h>

#include <errno.h>
#include <string.h>

static void check_pod(const char *json, size_t len)
{
    pc_kube_pod *p = NULL;
    char err[200] = "";
    int rc = pc_kube_pod_decode(json, len, &p, err, sizeof(err));
    FUZZ_CHECK(rc == 0 || rc == -EBADMSG || rc == -EINVAL || rc == -ENOMEM, "rc %d", rc);
    FUZZ_CHECK(strlen(err) < sizeof(err));
    if (rc != 0) {
        FUZZ_CHECK(p == NULL, "an error with a pod");
        FUZZ_CHECK(err[0], "refused without a message (rc %d)", rc);
        return;
    }
    FUZZ_CHECK(p != NULL);
    FUZZ_CHECK(p->name && p->name[0] && p->namespace_ && p->namespace_[0], "no name/namespace");
    const char *strs[] = {p->uid, p->resource_version, p->creation_timestamp, p->status_phase};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        FUZZ_CHECK(strs[i] != NULL, "string %zu is NULL", i);
    for (size_t i = 0; i < p->n_labels; i++) {
        FUZZ_CHECK(p->labels[i].key && p->labels[i].value);
        FUZZ_CHECK(pc_kube_pod_label(p, p->labels[i].key) != NULL, "label %s not found",
                   p->labels[i].key);
    }
    for (size_t i = 0; i < p->n_annotations; i++) {
        FUZZ_CHECK(p->annotations[i].key != NULL);
        FUZZ_CHECK(pc_kube_pod_annotation(p, p->annotations[i].key) != NULL,
                   "annotation %s not found", p->annotations[i].key);
    }
    for (size_t i = 0; i < p->n_containers; i++)
        FUZZ_CHECK(p->containers[i].name && p->containers[i].image && !p->containers[i].ready);
    for (size_t i = 0; i < p->n_statuses; i++)
        FUZZ_CHECK(p->statuses[i].name && p->statuses[i].image);
    for (size_t i = 0; i < p->n_owners; i++)
        FUZZ_CHECK(p->owners[i].key && p->owners[i].value);
    pc_kube_pod_free(p);
}

typedef struct page {
    const char *body;
    size_t len;
    size_t items;
} page;

static int on_item(void *arg, const char *item, size_t len)
{
    page *pg = arg;
    FUZZ_CHECK(item >= pg->body && item + len <= pg->body + pg->len, "item outside the page");
    pg->items++;
    check_pod(item, len);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    switch (data[0] % 3) {
    case 0:
        check_pod(text, len);
        break;
    case 1: {
        char type[32];
        const char *obj = NULL;
        size_t obj_len = 0;
        int rc = pc_kube_watch_event_scan(text, len, type, sizeof(type), &obj, &obj_len);
        FUZZ_CHECK(rc == 0 || rc == -EBADMSG || rc == -ENOENT, "rc %d", rc);
        if (rc == 0) {
            FUZZ_CHECK(strlen(type) < sizeof(type));
            FUZZ_CHECK(obj >= text && obj + obj_len <= text + len, "object outside the line");
            check_pod(obj, obj_len);
            char rv[64];
            int n = pc_kube_object_rv(obj, obj_len, rv, sizeof(rv));
            FUZZ_CHECK(n == -EBADMSG || n == -EMSGSIZE || n == -ENOENT ||
                               (n >= 0 && (size_t)n == strlen(rv)),
                       "rv rc %d", n);
        }
        break;
    }
    default: {
        page pg = {text, len, 0};
        char rv[64], cont[256];
        int rc = pc_kube_list_scan(text, len, on_item, &pg, rv, sizeof(rv), cont, sizeof(cont));
        FUZZ_CHECK(rc == 0 || rc == -EBADMSG || rc == -ENOENT || rc == -EMSGSIZE, "rc %d", rc);
        if (rc == 0)
            FUZZ_CHECK(strlen(rv) < sizeof(rv) && strlen(cont) < sizeof(cont));
        break;
    }
    }
    return 0;
}
