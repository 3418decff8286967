/* podclaimctl: the command line of podclaimd (docs/daemon.md).
 *
 * Flow: [podclaimctl] -> podclaimd's HTTP API (claim, release, pools, top) ;
 *       [podclaimctl load] -> many keep-alive connections -> POST .../claims -> a wrk-style summary.
 *
 * claim/release/pools/top use libcurl (one request at a time). `load` is its own small HTTP/1.1
 * client on non-blocking sockets and one epoll loop (load.c): a load generator must cost far less
 * per request than the server it measures, and on a 2-core machine it shares the cores with it.
 */
#include "ctl.h"

#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *server = "http://127.0.0.1:8080";
static const char *token;

static void usage(FILE *f)
{
    fputs("usage: podclaimctl [--server URL] [--token T] COMMAND ...\n"
          "  --server URL   podclaimd's address (default $PODCLAIM_SERVER or "
          "http://127.0.0.1:8080)\n"
          "  --token T      bearer token (default $PODCLAIM_TOKEN)\n\n"
          "commands:\n"
          "  claim NS/POOL [--image CONTAINER=IMAGE]... [--label K=V]... [--annotation K=V]...\n"
          "                [--priority 0..5] [--timeout 5s] [--id CLAIM_ID] [--phase PHASE]\n"
          "  claim --env ENV [--tag TAG]... [same options]   route by the env's strategy\n"
          "  release NS/POOL CLAIM_ID                         phase -> Stopping (idempotent)\n"
          "  pools                                            one line per pool\n"
          "  top [--interval 1s] [--iterations N]             live view, refreshed each second\n"
          "  load NS/POOL | --env ENV [--rate R|max] [--duration 10s] [--connections 64]\n"
          "       [--release-after D] [--body JSON] [--json] [--name NAME] [claim options]\n"
          "       --release-after D: release each won claim D after its answer (0 = at once),\n"
          "       so the pool recycles the pods\n",
          f);
}

double ctl_parse_duration(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0)
        return -1;
    if (!*end || !strcmp(end, "s"))
        return v;
    if (!strcmp(end, "ms"))
        return v / 1e3;
    if (!strcmp(end, "m"))
        return v * 60;
    return -1;
}

/* ---- one request ------------------------------------------------------------------------------ */

typedef struct buf {
    char *p;
    size_t n;
} buf;

static size_t on_data(char *ptr, size_t size, size_t n, void *arg)
{
    buf *b = arg;
    char *np = realloc(b->p, b->n + size * n + 1);
    if (!np)
        return 0;
    memcpy(np + b->n, ptr, size * n);
    b->n += size * n;
    np[b->n] = '\0';
    b->p = np;
    return size * n;
}

static long request(const char *method, const char *path, const char *body, char **out)
{
    CURL *c = curl_easy_init();
    char url[2048], auth[1024];
    snprintf(url, sizeof(url), "%s%s", server, path);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    buf b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    long status = 0;
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK)
        fprintf(stderr, "podclaimctl: %s %s: %s\n", method, url, curl_easy_strerror(rc));
    else
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    *out = b.p ? b.p : strdup("");
    return status;
}

static int put_kv(json_t *obj, const char *kv, const char *what)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) {
        fprintf(stderr, "podclaimctl: %s %s: want KEY=VALUE\n", what, kv);
        return -1;
    }
    char key[512];
    snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
    json_object_set_new(obj, key, json_string(eq + 1));
    return 0;
}

/* Parse claim options from argv[i..] into a JSON body; returns the body or NULL. */
json_t *ctl_claim_body(int argc, char **argv, int *i, const char **env, const char **pool,
                       bool allow_other)
{
    json_t *b = json_object(), *images = json_object(), *labels = json_object(),
           *ann = json_object(), *tags = json_array();
    for (; *i < argc; (*i)++) {
        const char *a = argv[*i], *v = *i + 1 < argc ? argv[*i + 1] : NULL;
        bool takes = !strcmp(a, "--image") || !strcmp(a, "--label") || !strcmp(a, "--annotation") ||
                     !strcmp(a, "--priority") || !strcmp(a, "--timeout") || !strcmp(a, "--id") ||
                     !strcmp(a, "--env") || !strcmp(a, "--tag") || !strcmp(a, "--phase");
        if (takes && !v) {
            fprintf(stderr, "podclaimctl: %s needs a value\n", a);
            goto bad;
        }
        if (!strcmp(a, "--image")) {
            if (put_kv(images, v, a))
                goto bad;
        } else if (!strcmp(a, "--label")) {
            if (put_kv(labels, v, a))
                goto bad;
        } else if (!strcmp(a, "--annotation")) {
            if (put_kv(ann, v, a))
                goto bad;
        } else if (!strcmp(a, "--priority")) {
            json_object_set_new(b, "priority", json_integer(atoi(v)));
        } else if (!strcmp(a, "--timeout")) {
            double t = ctl_parse_duration(v);
            if (t <= 0) {
                fprintf(stderr, "podclaimctl: --timeout %s: want a duration like 5s\n", v);
                goto bad;
            }
            json_object_set_new(b, "timeoutSeconds", json_real(t));
        } else if (!strcmp(a, "--id")) {
            json_object_set_new(b, "claimId", json_string(v));
        } else if (!strcmp(a, "--phase")) {
            json_object_set_new(b, "targetPhase", json_string(v));
        } else if (!strcmp(a, "--env")) {
            *env = v;
        } else if (!strcmp(a, "--tag")) {
            json_array_append_new(tags, json_string(v));
        } else if (a[0] != '-' && !*pool && !*env) {
            *pool = a;
            continue;
        } else if (allow_other) {
            break;
        } else {
            fprintf(stderr, "podclaimctl: unexpected argument %s\n", a);
            goto bad;
        }
        (*i)++;
    }
    if (json_object_size(images))
        json_object_set(b, "images", images);
    if (json_object_size(labels))
        json_object_set(b, "labels", labels);
    if (json_object_size(ann))
        json_object_set(b, "annotations", ann);
    if (json_array_size(tags))
        json_object_set(b, "requiredTags", tags);
    json_decref(images);
    json_decref(labels);
    json_decref(ann);
    json_decref(tags);
    return b;
bad:
    json_decref(b);
    json_decref(images);
    json_decref(labels);
    json_decref(ann);
    json_decref(tags);
    return NULL;
}

int ctl_claim_path(const char *pool, const char *env, char *path, size_t len)
{
    if (env) {
        snprintf(path, len, "/v1/envs/%s/claims", env);
        return 0;
    }
    const char *slash = pool ? strchr(pool, '/') : NULL;
    if (!slash) {
        fprintf(stderr, "podclaimctl: want NAMESPACE/POOL or --env ENV\n");
        return -1;
    }
    snprintf(path, len, "/v1/pools/%.*s/%s/claims", (int)(slash - pool), pool, slash + 1);
    return 0;
}

static int cmd_claim(int argc, char **argv)
{
    int i = 0;
    const char *env = NULL, *pool = NULL;
    json_t *b = ctl_claim_body(argc, argv, &i, &env, &pool, false);
    char path[512];
    if (!b || ctl_claim_path(pool, env, path, sizeof(path)))
        return 2;
    char *body = json_dumps(b, JSON_COMPACT), *out;
    json_decref(b);
    long st = request("POST", path, body, &out);
    free(body);
    printf("%s\n", out);
    free(out);
    return st == 200 ? 0 : 1;
}

static int cmd_release(int argc, char **argv)
{
    if (argc != 2 || !strchr(argv[0], '/')) {
        fprintf(stderr, "podclaimctl: release NS/POOL CLAIM_ID\n");
        return 2;
    }
    const char *slash = strchr(argv[0], '/');
    char path[512], *out;
    snprintf(path, sizeof(path), "/v1/pools/%.*s/%s/claims/%s", (int)(slash - argv[0]), argv[0],
             slash + 1, argv[1]);
    long st = request("DELETE", path, NULL, &out);
    printf("%s\n", out);
    free(out);
    return st == 200 ? 0 : 1;
}

static json_t *get_pools(void)
{
    char *out;
    long st = request("GET", "/v1/pools", NULL, &out);
    json_t *j = st == 200 ? json_loads(out, 0, NULL) : NULL;
    if (st != 200)
        fprintf(stderr, "podclaimctl: GET /v1/pools: %ld %s\n", st, out);
    free(out);
    return j;
}

static int cmd_pools(void)
{
    json_t *j = get_pools();
    if (!j)
        return 1;
    printf("%-32s %-10s %6s %7s %8s %9s %6s\n", "POOL", "ENV", "IDLE", "QUEUED", "RESERVED",
           "INFLIGHT", "SYNCED");
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(j, "pools"), i, p)
    {
        char key[256];
        snprintf(key, sizeof(key), "%s/%s", json_string_value(json_object_get(p, "namespace")),
                 json_string_value(json_object_get(p, "name")));
        printf("%-32s %-10s %6lld %7lld %8lld %9lld %6s\n", key,
               json_string_value(json_object_get(p, "env")),
               (long long)json_integer_value(json_object_get(p, "idleReady")),
               (long long)json_integer_value(json_object_get(p, "queueLength")),
               (long long)json_integer_value(json_object_get(p, "reserved")),
               (long long)json_integer_value(json_object_get(p, "inflightCas")),
               json_is_true(json_object_get(p, "synced")) ? "yes" : "no");
    }
    json_decref(j);
    return 0;
}

/* ---- top ------------------------------------------------------------------------------------- */

/* Per pool and stage: cumulative bucket counts from one scrape. */
#define TOP_STAGES 5
#define TOP_MAXB 32
static const char *const stage_metric[TOP_STAGES] = {
        "podclaim_dispatch_latency_seconds", "podclaim_cas_round_trip_seconds",
        "podclaim_claim_latency_seconds", "podclaimd_claim_request_seconds",
        "podclaim_idle_to_claimable_seconds"};
static const char *const stage_title[TOP_STAGES] = {"dispatch", "cas", "claim", "http",
                                                    "idle>claim"};

typedef struct pool_scrape {
    char key[256];
    double ok, total;
    double le[TOP_STAGES][TOP_MAXB], cum[TOP_STAGES][TOP_MAXB];
    int nb[TOP_STAGES];
} pool_scrape;

static int label(const char *line, const char *name, char *out, size_t len)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "%s=\"", name);
    const char *p = strstr(line, pat);
    if (!p)
        return -1;
    p += strlen(pat);
    size_t n = strcspn(p, "\"");
    snprintf(out, len, "%.*s", (int)n, p);
    return 0;
}

static pool_scrape *scrape_find(pool_scrape *s, size_t *n, const char *line)
{
    char ns[128], pool[128], key[256];
    if (label(line, "namespace", ns, sizeof(ns)) || label(line, "pool", pool, sizeof(pool)))
        return NULL;
    snprintf(key, sizeof(key), "%s/%s", ns, pool);
    for (size_t i = 0; i < *n; i++)
        if (!strcmp(s[i].key, key))
            return &s[i];
    if (*n == 64)
        return NULL;
    pool_scrape *p = &s[(*n)++];
    memset(p, 0, sizeof(*p));
    snprintf(p->key, sizeof(p->key), "%s", key);
    return p;
}

static size_t scrape(pool_scrape *s)
{
    char *out;
    size_t n = 0;
    if (request("GET", "/metrics", NULL, &out) != 200) {
        free(out);
        return 0;
    }
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        double v = strtod(strrchr(line, ' ') ? strrchr(line, ' ') + 1 : "0", NULL);
        if (!strncmp(line, "podclaim_claims_total{", 22)) {
            pool_scrape *p = scrape_find(s, &n, line);
            if (p) {
                p->total += v;
                if (strstr(line, "result=\"ok\""))
                    p->ok += v;
            }
            continue;
        }
        for (int st = 0; st < TOP_STAGES; st++) {
            size_t ml = strlen(stage_metric[st]);
            if (strncmp(line, stage_metric[st], ml) || strncmp(line + ml, "_bucket{", 8))
                continue;
            pool_scrape *p = scrape_find(s, &n, line);
            char le[32];
            if (p && !label(line, "le", le, sizeof(le)) && p->nb[st] < TOP_MAXB) {
                p->le[st][p->nb[st]] = !strcmp(le, "+Inf") ? INFINITY : strtod(le, NULL);
                p->cum[st][p->nb[st]++] = v;
            }
        }
    }
    free(out);
    return n;
}

/* Quantile of the observations between two scrapes: the upper bound of the bucket holding it. */
static double window_quantile(const pool_scrape *now, const pool_scrape *before, int st, double q)
{
    int nb = now->nb[st];
    if (!nb)
        return NAN;
    double total = now->cum[st][nb - 1] - (before ? before->cum[st][nb - 1] : 0);
    if (total <= 0)
        return NAN;
    double rank = ceil(q * total);
    for (int i = 0; i < nb; i++) {
        double c = now->cum[st][i] - (before ? before->cum[st][i] : 0);
        if (c >= rank)
            return now->le[st][i];
    }
    return INFINITY;
}

static void fmt_secs(char *out, size_t len, double s)
{
    if (isnan(s))
        snprintf(out, len, "-");
    else if (isinf(s))
        snprintf(out, len, ">10s");
    else if (s < 1e-3)
        snprintf(out, len, "%.0fus", s * 1e6);
    else if (s < 1)
        snprintf(out, len, "%.1fms", s * 1e3);
    else
        snprintf(out, len, "%.1fs", s);
}

static int cmd_top(int argc, char **argv)
{
    double interval = 1;
    long iterations = -1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--interval") && i + 1 < argc)
            interval = ctl_parse_duration(argv[++i]);
        else if (!strcmp(argv[i], "--iterations") && i + 1 < argc)
            iterations = atol(argv[++i]);
        else {
            fprintf(stderr, "podclaimctl top: unexpected %s\n", argv[i]);
            return 2;
        }
    }
    if (interval <= 0)
        return 2;
    static pool_scrape prev[64], cur[64];
    size_t nprev = scrape(prev);
    bool tty = isatty(1);
    for (long it = 0; iterations < 0 || it < iterations; it++) {
        struct timespec ts = {(time_t)interval, (long)((interval - (time_t)interval) * 1e9)};
        nanosleep(&ts, NULL); /* the refresh period itself */
        size_t n = scrape(cur);
        json_t *pools = get_pools();
        if (tty)
            fputs("\033[H\033[2J", stdout);
        time_t now = time(NULL);
        printf("podclaimd %s   %s", server, ctime(&now));
        printf("%-28s %5s %6s %5s %5s %8s", "POOL", "IDLE", "QUEUED", "RESV", "INFL", "CLAIMS/S");
        for (int st = 0; st < TOP_STAGES; st++)
            printf(" %10s p50/p99", stage_title[st]);
        printf("\n");
        for (size_t i = 0; i < n; i++) {
            pool_scrape *before = NULL;
            for (size_t k = 0; k < nprev; k++)
                if (!strcmp(prev[k].key, cur[i].key))
                    before = &prev[k];
            long long idle = 0, queued = 0, resv = 0, infl = 0;
            size_t k;
            json_t *p;
            json_array_foreach(json_object_get(pools, "pools"), k, p)
            {
                char key[256];
                snprintf(key, sizeof(key), "%s/%s",
                         json_string_value(json_object_get(p, "namespace")),
                         json_string_value(json_object_get(p, "name")));
                if (!strcmp(key, cur[i].key)) {
                    idle = json_integer_value(json_object_get(p, "idleReady"));
                    queued = json_integer_value(json_object_get(p, "queueLength"));
                    resv = json_integer_value(json_object_get(p, "reserved"));
                    infl = json_integer_value(json_object_get(p, "inflightCas"));
                }
            }
            double rate = (cur[i].ok - (before ? before->ok : 0)) / interval;
            printf("%-28s %5lld %6lld %5lld %5lld %8.0f", cur[i].key, idle, queued, resv, infl,
                   rate);
            for (int st = 0; st < TOP_STAGES; st++) {
                char a[16], b[16], both[40];
                fmt_secs(a, sizeof(a), window_quantile(&cur[i], before, st, 0.5));
                fmt_secs(b, sizeof(b), window_quantile(&cur[i], before, st, 0.99));
                snprintf(both, sizeof(both), "%s/%s", a, b);
                printf(" %18s", both);
            }
            printf("\n");
        }
        if (!n)
            printf("(no answer from %s)\n", server);
        fflush(stdout);
        json_decref(pools);
        memcpy(prev, cur, sizeof(cur));
        nprev = n;
    }
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    server = getenv("PODCLAIM_SERVER") ? getenv("PODCLAIM_SERVER") : server;
    token = getenv("PODCLAIM_TOKEN");
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--server") && i + 1 < argc)
            server = argv[++i];
        else if (!strcmp(argv[i], "--token") && i + 1 < argc)
            token = argv[++i];
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const char *cmd = argv[i++];
    int rc;
    if (!strcmp(cmd, "claim"))
        rc = cmd_claim(argc - i, argv + i);
    else if (!strcmp(cmd, "release"))
        rc = cmd_release(argc - i, argv + i);
    else if (!strcmp(cmd, "pools"))
        rc = cmd_pools();
    else if (!strcmp(cmd, "top"))
        rc = cmd_top(argc - i, argv + i);
    else if (!strcmp(cmd, "load"))
        rc = ctl_load(server, token, argc - i, argv + i);
    else {
        usage(stderr);
        rc = 2;
    }
    curl_global_cleanup();
    return rc;
}
