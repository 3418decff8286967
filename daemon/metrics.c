/* podclaimd /metrics and snapshots.
 *
 * Flow: pools (pc_pool_metrics_render, pc_pool_snapshot), informers (stats), the daemon's own
 *       counters and histograms -> [metrics] -> GET /metrics, GET /v1/pools.
 *
 * Every read is a relaxed atomic load or a lock-free library call, so a scrape never blocks a
 * scheduler (it costs the MHD thread that serves it a few tens of microseconds per pool).
 * Each pool renders a complete exposition with its own HELP/TYPE lines; Prometheus requires
 * one HELP/TYPE and one contiguous group of samples per family, so the renders are merged by
 * family name here before they are served.
 */
#include "podclaimd.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The same 1-2.5-5 ladder as the library's histograms: 1 us .. 10 s. */
static const int64_t bounds_ns[PCD_HIST_BOUNDS] = {
        1000,      2500,      5000,       10000,      25000,      50000,       100000,   250000,
        500000,    1000000,   2500000,    5000000,    10000000,   25000000,    50000000, 100000000,
        250000000, 500000000, 1000000000, 2500000000, 5000000000, 10000000000,
};

void pcd_hist_observe(pcd_hist *h, int64_t ns)
{
    if (ns < 0)
        ns = 0;
    size_t i = 0;
    while (i < PCD_HIST_BOUNDS && ns > bounds_ns[i])
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, (uint64_t)ns, memory_order_relaxed);
}

int64_t pcd_hist_quantile_ns(const pcd_hist *h, double q)
{
    uint64_t b[PCD_HIST_BOUNDS + 1], total = 0;
    for (size_t i = 0; i <= PCD_HIST_BOUNDS; i++)
        total += b[i] = atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
    if (!total)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)total + 0.999999), seen = 0;
    for (size_t i = 0; i <= PCD_HIST_BOUNDS; i++) {
        seen += b[i];
        if (seen >= rank)
            return i < PCD_HIST_BOUNDS ? bounds_ns[i] : INT64_MAX;
    }
    return INT64_MAX;
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

void pcd_buf_vprintf(char **buf, size_t *len, size_t *cap, const char *fmt, va_list ap)
{
    for (;;) {
        va_list again;
        va_copy(again, ap);
        int n = vsnprintf(*buf ? *buf + *len : NULL, *buf ? *cap - *len : 0, fmt, again);
        va_end(again);
        if (n < 0)
            return;
        if (*buf && *len + (size_t)n < *cap) {
            *len += (size_t)n;
            return;
        }
        size_t c = *cap ? *cap : 4096;
        while (c <= *len + (size_t)n)
            c *= 2;
        char *np = realloc(*buf, c);
        if (!np)
            return;
        *buf = np;
        *cap = c;
    }
}

static void buf_printf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static void buf_printf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pcd_buf_vprintf(buf, len, cap, fmt, ap);
    va_end(ap);
}

void pcd_counter_family(char **buf, size_t *len, size_t *cap, const char *name, const char *help,
                        const char *label, const pcd_counter *c, size_t n)
{
    buf_printf(buf, len, cap, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (size_t i = 0; i < n; i++)
        buf_printf(buf, len, cap, "%s{%s=\"%s\"} %llu\n", name, label, c[i].label_value,
                   (unsigned long long)c[i].v);
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pcd_buf_vprintf(&b->p, &b->len, &b->cap, fmt, ap);
    va_end(ap);
}

void pcd_hist_render(char **buf, size_t *len, size_t *cap, const char *name, const char *labels,
                     const pcd_hist *h)
{
    sbuf b = {*buf, *len, *cap};
    uint64_t cum = 0;
    for (size_t i = 0; i <= PCD_HIST_BOUNDS; i++) {
        cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        if (i < PCD_HIST_BOUNDS)
            sb_printf(&b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels,
                      (double)bounds_ns[i] / 1e9, (unsigned long long)cum);
        else
            sb_printf(&b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels,
                      (unsigned long long)cum);
    }
    sb_printf(&b, "%s_sum{%s} %.9f\n", name, labels,
              (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9);
    sb_printf(&b, "%s_count{%s} %llu\n", name, labels, (unsigned long long)cum);
    *buf = b.p;
    *len = b.len;
    *cap = b.cap;
}

static void hist(sbuf *b, const char *name, const char *labels, const pcd_hist *h)
{
    pcd_hist_render(&b->p, &b->len, &b->cap, name, labels, h);
}

/* ---- merging expositions by family ------------------------------------------------------------ */

typedef struct family {
    char name[128];
    char *meta; /* "# HELP ..\n# TYPE ..\n" */
    sbuf samples;
} family;

typedef struct families {
    family *f;
    size_t n, cap;
} families;

static family *family_get(families *fs, const char *name, size_t nl)
{
    for (size_t i = 0; i < fs->n; i++)
        if (strlen(fs->f[i].name) == nl && strncmp(fs->f[i].name, name, nl) == 0)
            return &fs->f[i];
    if (fs->n == fs->cap) {
        size_t cap = fs->cap ? fs->cap * 2 : 64;
        family *nf = realloc(fs->f, cap * sizeof(*nf));
        if (!nf)
            return NULL;
        fs->f = nf;
        fs->cap = cap;
    }
    family *f = &fs->f[fs->n++];
    memset(f, 0, sizeof(*f));
    snprintf(f->name, sizeof(f->name), "%.*s", (int)(nl < 127 ? nl : 127), name);
    return f;
}

/* Add one exposition: lines after "# HELP name" / "# TYPE name" belong to that family. */
static void merge(families *fs, const char *text)
{
    family *cur = NULL;
    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');
        size_t ll = eol ? (size_t)(eol - line) : strlen(line);
        if (ll > 7 && (strncmp(line, "# HELP ", 7) == 0 || strncmp(line, "# TYPE ", 7) == 0)) {
            const char *nm = line + 7;
            size_t nl = strcspn(nm, " \n");
            cur = family_get(fs, nm, nl);
            if (cur) {
                sbuf m = {cur->meta, cur->meta ? strlen(cur->meta) : 0,
                          cur->meta ? strlen(cur->meta) + 1 : 0};
                /* keep the first HELP and TYPE only */
                bool help = line[2] == 'H';
                bool have = cur->meta && strstr(cur->meta, help ? "# HELP " : "# TYPE ");
                if (!have) {
                    sb_printf(&m, "%.*s\n", (int)ll, line);
                    cur->meta = m.p;
                }
            }
        } else if (ll && line[0] != '#' && cur) {
            sb_printf(&cur->samples, "%.*s\n", (int)ll, line);
        }
        line += ll + (eol != NULL);
    }
}

static char *pool_render(const pc_pool *p)
{
    size_t cap = 16384;
    for (;;) {
        char *buf = malloc(cap);
        if (!buf)
            return NULL;
        size_t need = pc_pool_metrics_render(p, buf, cap);
        if (need < cap)
            return buf;
        free(buf);
        cap = need + 1024;
    }
}

char *pcd_metrics_render(pcd *d, size_t *len)
{
    families fs = {0};
    pcd_table *pt = pcd_pools_now(d); /* the live pools now; the table stays valid memory */
    size_t n_pools = pt->n;
    pcd_pool **pools = (pcd_pool **)pt->item;
    for (size_t i = 0; i < n_pools; i++) {
        char *t = pool_render(pools[i]->pool);
        if (t)
            merge(&fs, t);
        free(t);
    }
    sbuf own = {0};
    sb_printf(&own, "# HELP podclaimd_claim_request_seconds From a claim request's headers to "
                    "its answer (HTTP, per pool).\n# TYPE podclaimd_claim_request_seconds "
                    "histogram\n");
    for (size_t i = 0; i < n_pools; i++)
        hist(&own, "podclaimd_claim_request_seconds", pools[i]->labels, &pools[i]->request_latency);
    sb_printf(&own, "# HELP podclaim_idle_to_claimable_seconds From the watch bytes saying a pod "
                    "is idle to its offer to the pool.\n# TYPE "
                    "podclaim_idle_to_claimable_seconds histogram\n");
    for (size_t i = 0; i < n_pools; i++)
        hist(&own, "podclaim_idle_to_claimable_seconds", pools[i]->labels,
             &pools[i]->idle_to_claimable);
    sb_printf(&own, "# HELP podclaim_cas_round_trip_seconds From a CAS's start to its outcome "
                    "(one PATCH, measured around the backend).\n# TYPE "
                    "podclaim_cas_round_trip_seconds histogram\n");
    for (size_t i = 0; i < n_pools; i++)
        hist(&own, "podclaim_cas_round_trip_seconds", pools[i]->labels, &pools[i]->cas_round_trip);
    sb_printf(&own, "# HELP podclaimd_informer_synced 1 once the pool's informer listed its pods."
                    "\n# TYPE podclaimd_informer_synced gauge\n");
    for (size_t i = 0; i < n_pools; i++)
        sb_printf(&own, "podclaimd_informer_synced{%s} %d\n", pools[i]->labels,
                  pc_informer_has_synced(pools[i]->informer) ? 1 : 0);
    sb_printf(&own, "# HELP podclaimd_informer_pods Pods in the informer's cache.\n# TYPE "
                    "podclaimd_informer_pods gauge\n");
    for (size_t i = 0; i < n_pools; i++) {
        pc_informer_stats st;
        pc_informer_stats_read(pools[i]->informer, &st);
        sb_printf(&own, "podclaimd_informer_pods{%s} %llu\n", pools[i]->labels,
                  (unsigned long long)st.pods);
    }
    sb_printf(&own, "# HELP podclaimd_env_routed_total Claims an env routed to the pool.\n"
                    "# TYPE podclaimd_env_routed_total counter\n");
    for (size_t i = 0; i < n_pools; i++)
        sb_printf(&own, "podclaimd_env_routed_total{%s} %llu\n", pools[i]->labels,
                  (unsigned long long)atomic_load_explicit(&pools[i]->env_routed,
                                                           memory_order_relaxed));
    sb_printf(&own, "# HELP podclaimd_http_responses_total HTTP answers by route and status.\n"
                    "# TYPE podclaimd_http_responses_total counter\n");
    for (int r = 0; r < PCD_ROUTE_COUNT; r++)
        for (int c = 0; c < PCD_N_CODES; c++) {
            uint64_t v = atomic_load_explicit(&d->responses[r][c], memory_order_relaxed);
            char code[16];
            snprintf(code, sizeof(code), "%d", pcd_codes[c]);
            if (v || (r == PCD_ROUTE_CLAIM && (pcd_codes[c] == 200 || pcd_codes[c] == 503)))
                sb_printf(&own, "podclaimd_http_responses_total{route=\"%s\",code=\"%s\"} %llu\n",
                          pcd_route_names[r], pcd_codes[c] ? code : "other", (unsigned long long)v);
        }
    sb_printf(&own,
              "# HELP podclaimd_claims_waiting Claim requests parked until their pool "
              "answers.\n# TYPE podclaimd_claims_waiting gauge\npodclaimd_claims_waiting "
              "%lld\n",
              (long long)atomic_load_explicit(&d->waiting, memory_order_relaxed));
    sb_printf(&own,
              "# HELP podclaimd_client_hangups_total Clients that closed the connection "
              "while their claim waited.\n# TYPE podclaimd_client_hangups_total counter\n"
              "podclaimd_client_hangups_total %llu\n",
              (unsigned long long)atomic_load_explicit(&d->hangups, memory_order_relaxed));
    static const char *rel[] = {"released", "already_released", "failed"};
    sb_printf(&own, "# HELP podclaimd_releases_total Releases (phase -> Stopping) by result.\n"
                    "# TYPE podclaimd_releases_total counter\n");
    for (int i = 0; i < 3; i++)
        sb_printf(&own, "podclaimd_releases_total{result=\"%s\"} %llu\n", rel[i],
                  (unsigned long long)atomic_load_explicit(&d->releases[i], memory_order_relaxed));
    sb_printf(
            &own,
            "# HELP podclaimd_release_throttled_total API server 429s met by release PATCHes "
            "(each put the release aside for the Retry-After).\n"
            "# TYPE podclaimd_release_throttled_total counter\n"
            "podclaimd_release_throttled_total %llu\n",
            (unsigned long long)atomic_load_explicit(&d->releases_throttled, memory_order_relaxed));
    sb_printf(&own,
              "# HELP podclaimd_release_retries_total Failed releases no client waits for (a "
              "hung-up client's pod, a late win), put aside and tried again.\n"
              "# TYPE podclaimd_release_retries_total counter\n"
              "podclaimd_release_retries_total %llu\n",
              (unsigned long long)atomic_load_explicit(&d->releases_retried, memory_order_relaxed));
    sb_printf(&own,
              "# HELP podclaimd_orphan_releases_total Pods won for a client that had hung "
              "up, given back.\n# TYPE podclaimd_orphan_releases_total counter\n"
              "podclaimd_orphan_releases_total %llu\n",
              (unsigned long long)atomic_load_explicit(&d->orphan_releases, memory_order_relaxed));
    sb_printf(
            &own,
            "# HELP podclaimd_late_win_releases_total Pods won by a claim that had already "
            "ended without a pod (its PATCH applied after the deadline), given back.\n"
            "# TYPE podclaimd_late_win_releases_total counter\n"
            "podclaimd_late_win_releases_total %llu\n",
            (unsigned long long)atomic_load_explicit(&d->late_win_releases, memory_order_relaxed));
    sb_printf(&own,
              "# HELP podclaimd_claims_adopted_total Claims an informer showed holding a pod "
              "before this process knew them (won through the other replica, or here before a "
              "restart), registered so a release here can end them.\n# TYPE "
              "podclaimd_claims_adopted_total counter\n"
              "podclaimd_claims_adopted_total %llu\n",
              (unsigned long long)atomic_load_explicit(&d->claims_adopted, memory_order_relaxed));
    sb_printf(&own,
              "# HELP podclaimd_ready 1 when every informer has synced and the daemon is "
              "not shutting down.\n# TYPE podclaimd_ready gauge\npodclaimd_ready %d\n",
              pcd_ready(d) ? 1 : 0);
    pcd_cluster_metrics(d, &own.p, &own.len, &own.cap);
    if (own.p)
        merge(&fs, own.p);
    free(own.p);

    sbuf out = {0};
    for (size_t i = 0; i < fs.n; i++) {
        if (fs.f[i].meta)
            sb_printf(&out, "%s", fs.f[i].meta);
        if (fs.f[i].samples.p)
            sb_printf(&out, "%s", fs.f[i].samples.p);
        free(fs.f[i].meta);
        free(fs.f[i].samples.p);
    }
    free(fs.f);
    if (!out.p)
        out.p = strdup("");
    *len = out.p ? strlen(out.p) : 0;
    return out.p;
}

bool pcd_ready(pcd *d)
{
    if (atomic_load_explicit(&d->draining, memory_order_relaxed))
        return false;
    pcd_table *t = pcd_pools_now(d);
    for (size_t i = 0; i < t->n; i++)
        if (!pc_informer_has_synced(((pcd_pool *)t->item[i])->informer))
            return false;
    return pcd_cluster_synced(d) && pcd_pools_settled(d);
}

static json_t *pool_json(const pcd_pool *p)
{
    char leader[256];
    pcd_leader_of(p->d, p, leader, sizeof(leader));
    pc_snapshot s = pc_pool_snapshot(p->pool);
    pc_informer_stats st;
    pc_informer_stats_read(p->informer, &st);
    json_t *tags = json_array();
    for (size_t i = 0; i < p->cfg.n_tags; i++)
        json_array_append_new(tags, json_string(p->cfg.tags[i]));
    json_t *j = json_pack(
            "{s:s,s:s,s:s,s:s,s:s,s:o,s:I,s:I,s:I,s:I,s:f,s:b,s:{s:I,s:I},s:f,s:f}", "namespace",
            p->cfg.namespace_, "name", p->cfg.name, "team", p->cfg.team, "user", p->cfg.user, "env",
            p->cfg.env, "tags", tags, "idleReady", (json_int_t)s.idle_ready, "queueLength",
            (json_int_t)s.queue_len, "reserved", (json_int_t)s.reserved, "inflightCas",
            (json_int_t)s.inflight_cas, "lastDispatchAt", (double)s.last_dispatch_at / 1e9,
            "synced", pc_informer_has_synced(p->informer), "informer", "pods", (json_int_t)st.pods,
            "idle", (json_int_t)st.idle, "requestP50Ms",
            (double)pcd_hist_quantile_ns(&p->request_latency, 0.5) / 1e6, "requestP99Ms",
            (double)pcd_hist_quantile_ns(&p->request_latency, 0.99) / 1e6);
    json_object_set_new(j, "leading", json_boolean(pcd_may_write(p)));
    json_object_set_new(j, "leader", json_string(leader));
    bool obj = atomic_load_explicit(&p->from_object, memory_order_relaxed);
    json_object_set_new(j, "source",
                        json_string(p->from_file && obj ? "file+object"
                                    : obj               ? "object"
                                                        : "file"));
    return j;
}

char *pcd_pools_json(pcd *d, const pcd_pool *only, size_t *len)
{
    json_t *j;
    if (only) {
        j = pool_json(only);
    } else {
        json_t *arr = json_array();
        pcd_table *t = pcd_pools_now(d);
        for (size_t i = 0; i < t->n; i++)
            json_array_append_new(arr, pool_json(t->item[i]));
        j = json_pack("{s:o}", "pools", arr);
    }
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    *len = s ? strlen(s) : 0;
    return s;
}

char *pcd_envs_json(pcd *d, size_t *len)
{
    json_t *arr = json_array();
    pcd_table *et = pcd_envs_now(d), *pt = pcd_pools_now(d);
    for (size_t i = 0; i < et->n; i++) {
        pcd_env *e = et->item[i];
        json_t *pools = json_array();
        for (size_t k = 0; k < pt->n; k++) {
            pcd_pool *p = pt->item[k];
            if (strcmp(p->cfg.env, e->cfg.name) == 0)
                json_array_append_new(pools, json_string(p->key));
        }
        json_array_append_new(arr,
                              json_pack("{s:s,s:s,s:o}", "name", e->cfg.name, "strategy",
                                        pc_env_strategy_name(e->cfg.strategy), "pools", pools));
    }
    json_t *j = json_pack("{s:o}", "envs", arr);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    *len = s ? strlen(s) : 0;
    return s;
}
