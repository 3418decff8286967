/* Fuzz target: the informer's event handling (src/informer: watch lines, LIST pages, the pod
 * cache and its transitions), fed through the watch framer as a watch stream would be.
 *
 * Input: byte 0 chunks the stream; then lines: "L <json>" is a LIST page (a new generation,
 * swept after it), any other line a watch event. Oracles, after every input: the pool's view,
 * built from the OFFER/WITHDRAW calls alone, equals the cache's idle set (each idle pod's last
 * call an OFFER at its cached resourceVersion; every other pod's, if any, a WITHDRAW); the
 * idle and pod counters match the cache.
 */
#include "fuzz.h"
#include "informer_internal.h"

#include <jansson.h>
#include <string.h>

static pc_kube_client *client;
static json_t *view; /* "ns/name" -> [change, rv]: the last call the pool saw per pod */

static void quiet(void *arg, int level, const char *line)
{
    (void)arg, (void)level, (void)line;
}

static void observe(void *arg, pc_informer_change ch, const pc_pod_ref *pod, int64_t recv)
{
    (void)arg, (void)recv;
    FUZZ_CHECK(pod->namespace_[0] && pod->name[0]);
    FUZZ_CHECK(ch != PC_INFORMER_OFFER || pod->resource_version[0], "offer without a version");
    char key[PC_NAMESPACE_MAX + PC_NAME_MAX + 2];
    snprintf(key, sizeof(key), "%s/%s", pod->namespace_, pod->name);
    /* _nocheck: a key is not checked for UTF-8 (the informer's names are, now; this map must
     * not hide a pod that slipped through) */
    json_object_set_new_nocheck(
            view, key, json_pack("[i,o]", (int)ch, json_string_nocheck(pod->resource_version)));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char err[256];
    pc_kube_options o = {.server = "http://127.0.0.1:9", .log = quiet};
    if (pc_kube_client_new(&o, &client, err, sizeof(err)))
        abort();
    return 0;
}

static int on_line(void *arg, const char *line, size_t len)
{
    pc_informer *inf = arg;
    if (len >= 2 && line[0] == 'L' && line[1] == ' ') {
        char rv[PC_RV_MAX] = "", cont[4096] = "";
        inf->gen++;
        if (pc__informer_list_page(inf, line + 2, len - 2, rv, cont) == 0)
            pc__informer_list_sweep(inf);
        return 0;
    }
    pc__informer_watch_line(inf, line, len); /* a stop just means "reconnect": go on */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    pc_informer_config ic = {.client = client, .namespace_ = "g", .pool = "p", .observer = observe};
    pc_informer *inf;
    FUZZ_CHECK(pc_informer_new(&ic, &inf) == 0);
    view = json_object();
    pc__framer f;
    pc__framer_init(&f, 1 << 16);
    unsigned seed = data[0];
    for (size_t off = 1; off < size;) {
        size_t chunk = 1 + (seed = seed * 1103515245u + 12345u) % 97u;
        if (chunk > size - off)
            chunk = size - off;
        pc__framer_feed(&f, (const char *)data + off, chunk, on_line, inf);
        off += chunk;
    }
    pc__framer_fini(&f);

    size_t pods = 0, idle = 0;
    pc__podcache_iter it;
    for (pc__pod *p = pc__podcache_first(&inf->cache, &it); p;
         p = pc__podcache_next(&inf->cache, &it)) {
        pods++;
        FUZZ_CHECK(p->name[0] && p->namespace_[0] && p->rv[0]);
        char key[PC_NAMESPACE_MAX + PC_NAME_MAX + 2];
        snprintf(key, sizeof(key), "%s/%s", p->namespace_, p->name);
        json_t *last = json_object_get(view, key);
        if (pc__pod_is_idle(p)) {
            idle++;
            FUZZ_CHECK(last && json_integer_value(json_array_get(last, 0)) == PC_INFORMER_OFFER,
                       "idle pod %s@%s: the pool's last call was no offer", key, p->rv);
            FUZZ_CHECK(!strcmp(json_string_value(json_array_get(last, 1)), p->rv),
                       "idle pod %s@%s offered at %s", key, p->rv,
                       json_string_value(json_array_get(last, 1)));
        } else {
            FUZZ_CHECK(!last || json_integer_value(json_array_get(last, 0)) == PC_INFORMER_WITHDRAW,
                       "pod %s@%s is not idle, but the pool holds an offer", key, p->rv);
        }
        json_object_del(view, key);
    }
    /* pods not cached: the pool must not hold an offer for them */
    const char *k;
    json_t *v;
    json_object_foreach(view, k, v)
    {
        FUZZ_CHECK(json_integer_value(json_array_get(v, 0)) == PC_INFORMER_WITHDRAW,
                   "pod %s is gone from the cache, but the pool holds an offer", k);
    }
    pc_informer_stats s;
    pc_informer_stats_read(inf, &s);
    FUZZ_CHECK(s.pods == pods, "pods counter %llu, cache %zu", (unsigned long long)s.pods, pods);
    FUZZ_CHECK(s.idle == idle, "idle counter %llu, cache %zu", (unsigned long long)s.idle, idle);
    json_decref(view);
    pc_informer_free(inf);
    return 0;
}
