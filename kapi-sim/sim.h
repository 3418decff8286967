/* kapi-sim internals: one header for the modules of the Kubernetes API server stand-in.
 *
 * kapi-sim is the oracle libpodclaim is tested against, so it shares no code with it (DESIGN.md
 * §6); its internal symbols use the prefix ks_ rather than pc__ to make that visible.
 *
 * Flow of a request:  http.c (MHD glue, auth, faults, routing)
 *                       → api.c (verbs on resources, Status errors) → store.c (objects, global
 *                         revision, bounded event history, one mutex + condvar)
 *                       → watch.c (streams history to watchers)
 *                     controller.c reacts to store writes (pool pods, claim log);
 *                     selector.c, patch.c are pure functions on jansson values.
 *
 * Lock order: the store mutex is the only lock taken while another is held (faults and the
 * claim log have their own mutexes and never take the store mutex).
 */
#ifndef PODCLAIM_KAPI_SIM_H
#define PODCLAIM_KAPI_SIM_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KS_MAX_BODY (3u << 20) /* bytes; larger request bodies get 413 like kube-apiserver */

/* ---- resources -------------------------------------------------------------------------- */

/* Columns: id, group, version, plural, kind, namespaced, has /status, custom resource, short
 * name, unconditional update allowed (a PUT without metadata.resourceVersion: the REST
 * strategy's AllowUnconditionalUpdate; pods and namespaces yes, leases, CRDs and custom
 * resources no). */
#define KS_RESOURCES(XX)                                                                           \
    XX(POD, "", "v1", "pods", "Pod", true, true, false, "po", true)                                \
    XX(NAMESPACE, "", "v1", "namespaces", "Namespace", false, true, false, "ns", true)             \
    XX(LEASE, "coordination.k8s.io", "v1", "leases", "Lease", true, false, false, "", false)       \
    XX(SANDBOXPOOL, "podclaim.io", "v1alpha1", "sandboxpools", "SandboxPool", true, true, true,    \
       "sbp", false)                                                                               \
    XX(SANDBOXCLAIM, "podclaim.io", "v1alpha1", "sandboxclaims", "SandboxClaim", true, true, true, \
       "sbc", false)                                                                               \
    XX(CRD, "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", \
       false, true, false, "crd", false)                                                           \
    XX(EVENT, "events.k8s.io", "v1", "events", "Event", true, false, false, "ev", true)            \
    XX(SERVICEACCOUNT, "", "v1", "serviceaccounts", "ServiceAccount", true, false, false, "sa",    \
       true)                                                                                       \
    XX(CONFIGMAP, "", "v1", "configmaps", "ConfigMap", true, false, false, "cm", true)             \
    XX(SERVICE, "", "v1", "services", "Service", true, true, false, "svc", true)                   \
    XX(DEPLOYMENT, "apps", "v1", "deployments", "Deployment", true, true, false, "deploy", true)   \
    XX(ROLE, "rbac.authorization.k8s.io", "v1", "roles", "Role", true, false, false, "", true)     \
    XX(ROLEBINDING, "rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", true, false, \
       false, "", true)

typedef enum ks_res_id {
#define XX(id, g, v, p, k, nsd, st, cr, sn, uu) KS_RES_##id,
    KS_RESOURCES(XX)
#undef XX
            KS_RES_COUNT
} ks_res_id;

typedef struct ks_res {
    ks_res_id id;
    const char *group; /* "" = core */
    const char *version;
    const char *plural;
    const char *kind;
    const char *list_kind;
    const char *api_version; /* "v1" or "group/version" */
    bool namespaced;
    bool has_status;        /* has a /status subresource */
    bool custom;            /* a custom resource: no strategic merge patch (415) */
    const char *short_name; /* "" = none */
    bool uncond_update;     /* PUT without resourceVersion allowed */
} ks_res;

extern const ks_res ks_resources[KS_RES_COUNT];
const ks_res *ks_res_find(const char *group, const char *version, const char *plural);

/* ---- errors ----------------------------------------------------------------------------- */

/* An API error, turned into a metav1.Status by ks_status_json(). */
#define KS_MAX_CAUSES 8
typedef struct ks_cause {
    const char *type; /* CauseType: FieldValueInvalid, FieldValueRequired, ... (static) */
    char field[160];  /* "" = none */
    char message[512];
} ks_cause;

typedef struct ks_err {
    int code;           /* HTTP status; 0 = no error */
    const char *reason; /* StatusReason: NotFound, Conflict, ... (static string) */
    char message[2048];
    const char *field; /* 422 only: the field named in details.causes (static string) */
    /* details.group/kind (static strings) and name (copied) when they are not the request's
     * resource; d_set says they were given. */
    bool d_set;
    const char *d_group, *d_kind;
    char d_name[256];
    int ncauses; /* explicit details.causes; 0 = derived from field for a 422 */
    ks_cause causes[KS_MAX_CAUSES];
    int retry_after_s; /* details.retryAfterSeconds and Retry-After; 0 = none */
    bool no_details;   /* the Status has no details at all */
} ks_err;

void ks_err_set(ks_err *e, int code, const char *reason, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
/* Name other details than the request's resource (group, kind: static strings; name copied,
 * may be NULL). */
void ks_err_details(ks_err *e, const char *group, const char *kind, const char *name);
/* Append a details.causes entry (dropped beyond KS_MAX_CAUSES). field may be NULL. */
void ks_err_cause(ks_err *e, const char *type, const char *field, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
/* A Status object for e; details name the object when name != NULL. New reference. Strings
 * that are not valid UTF-8 are repaired (U+FFFD), as Go's encoder does, so a Status always has
 * a body. */
json_t *ks_status_json(const ks_err *e, const ks_res *res, const char *name);
/* s with every invalid UTF-8 sequence replaced by U+FFFD; malloc'd. */
char *ks_utf8_repair(const char *s);

/* ---- selectors (selector.c) ------------------------------------------------------------- */

typedef struct ks_lsel ks_lsel;
typedef struct ks_fsel ks_fsel;

/* Parse a label selector ("a=b,c!=d,e in (x,y),!f"). NULL or "" selects everything.
 * Returns NULL and fills err (400) on a syntax error. */
ks_lsel *ks_lsel_parse(const char *s, ks_err *err);
bool ks_lsel_match(const ks_lsel *sel, const json_t *labels); /* labels may be NULL */
void ks_lsel_free(ks_lsel *sel);
bool ks_lsel_empty(const ks_lsel *sel);

/* Parse a field selector on metadata.name, metadata.namespace, status.phase, spec.nodeName. */
ks_fsel *ks_fsel_parse(const char *s, ks_err *err);
bool ks_fsel_match(const ks_fsel *sel, const json_t *obj);
void ks_fsel_free(ks_fsel *sel);

/* ---- patches (patch.c) ------------------------------------------------------------------ */

typedef enum ks_patch_type {
    KS_PATCH_MERGE,
    KS_PATCH_JSON,
    KS_PATCH_STRATEGIC,
    KS_PATCH_APPLY, /* server-side apply: refused with 415 */
    KS_PATCH_COUNT
} ks_patch_type;

/* Patch type from a Content-Type header; -1 if unknown. */
int ks_patch_type_parse(const char *content_type);
/* Apply patch to a copy of doc. Returns the new document (new reference), or NULL with err
 * set (422 for a failed JSON-patch test or bad path, 400 for a malformed patch). doc and
 * patch are not modified. */
json_t *ks_patch_apply(ks_patch_type t, const json_t *doc, const json_t *patch, ks_err *err);
json_t *ks_merge_patch(const json_t *doc, const json_t *patch);
json_t *ks_strategic_patch(const json_t *doc, const json_t *patch, ks_err *err);
json_t *ks_json_patch(const json_t *doc, const json_t *patch, ks_err *err);

/* ---- store (store.c) -------------------------------------------------------------------- */

typedef enum ks_ev_type { KS_EV_ADDED, KS_EV_MODIFIED, KS_EV_DELETED, KS_EV_COUNT } ks_ev_type;
extern const char *const ks_ev_names[KS_EV_COUNT];

/* One entry of the event history: immutable once published. */
/* Where the JSON text of a top-level member's value lies in an object's serialisation, and
 * which (immutable) json_t it is the text of: a later version sharing that json_t (a patch
 * copies only what it changes) reuses the text instead of serialising it again. */
#define KS_TEXT_MEMBERS 8
typedef struct ks_member_text {
    const json_t *val; /* NULL: not reusable (holds the resourceVersion) */
    size_t off, len;
} ks_member_text;

typedef struct ks_event {
    uint64_t rev;
    ks_res_id res;
    ks_ev_type type;
    int64_t at_ns; /* CLOCK_MONOTONIC when committed; for delayed delivery */
    json_t *obj;   /* the object after the change (for DELETED: last state, new rv) */
    json_t *old;   /* the object before (NULL for ADDED) */
    char *line;    /* {"type":...,"object":...}\n, shared by all watchers */
    size_t line_len;
    ks_member_text mem[KS_TEXT_MEMBERS]; /* obj's members in line (offsets into line) */
    int nmem;
} ks_event;

typedef struct ks_store ks_store;

/* A watch waiting for events: commits signal only waiters with `waiting` set, so a watch that
 * is batching (see watch.c) is not woken by every write, and only for an event of the
 * waiter's resource: a watch of leases is not woken by every pod write (it would only step its
 * cursor over events it filters out). It is woken by other resources' events only once its
 * cursor lags catch_up revisions behind, so that it steps over them before the history ring
 * passes it (it would get 410 Expired otherwise; a watch of one resource is never expired by
 * another's churn while it keeps up). Fields under the store mutex. */
typedef struct ks_waiter {
    struct ks_waiter *prev, *next;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    bool waiting;
    int res;           /* ks_res_id of the watched resource */
    uint64_t catch_up; /* wake on any commit from this revision on (0: from now) */
} ks_waiter;

/* Called under the store mutex after every committed change (controller hook). */
typedef void (*ks_store_hook)(void *arg, const ks_event *ev);

struct ks_store {
    pthread_mutex_t mu;
    ks_waiter *waiters; /* every open watch; woken on commit (if waiting), compaction, shutdown */
    json_t *objs[KS_RES_COUNT]; /* "ns/name" (or "name") -> stored object; objects never mutate */
    uint64_t rev;               /* last committed revision */
    ks_event *hist;             /* ring of hist_cap events; holds revisions [lo, rev] */
    size_t hist_cap;
    uint64_t lo;        /* oldest revision in history; rev + 1 when empty */
    uint64_t compacted; /* resume from a revision < compacted -> 410 Expired */
    bool shutdown;
    ks_store_hook hook;
    void *hook_arg;
    uint64_t uid_seq;
};

int ks_store_init(ks_store *s, size_t hist_cap);
/* Process-wide malloc settings for the write churn; call once from main. */
void ks_tune_malloc(void);
void ks_store_fini(ks_store *s);
void ks_store_shutdown(ks_store *s);
void ks_waiter_add_locked(ks_store *s, ks_waiter *w);    /* initialises w->cv */
void ks_waiter_remove_locked(ks_store *s, ks_waiter *w); /* destroys w->cv */
/* Drop history up to and including revision upto (0 = everything so far). Locks. */
void ks_store_compact(ks_store *s, uint64_t upto);

/* Object key "ns/name" or "name" in buf. */
const char *ks_key(char *buf, size_t n, const ks_res *res, const char *ns, const char *name);
/* The following require the store mutex (the _locked suffix says so). */
const json_t *ks_store_get_locked(ks_store *s, const ks_res *res, const char *ns, const char *name);
/* Commit a new state of an object (obj stolen; NULL = delete). Assigns resourceVersion (and
 * uid/creationTimestamp on create), records the event, wakes watchers, calls the hook.
 * Returns the stored object (borrowed, valid while locked). */
const json_t *ks_store_commit_locked(ks_store *s, const ks_res *res, const char *ns,
                                     const char *name, json_t *obj);
const ks_event *ks_store_event_locked(const ks_store *s, uint64_t rev); /* NULL if not held */

/* A new object version serialised before taking the store mutex: its JSON text carries a
 * placeholder resourceVersion that the commit replaces with the real one. */
typedef struct ks_prepared {
    json_t *obj; /* owned */
    char *text;  /* its JSON; NULL when the placeholder could not be used */
    size_t len;
    size_t rv_off;                       /* offset of the placeholder in text */
    ks_member_text mem[KS_TEXT_MEMBERS]; /* offsets into text */
    int nmem;
} ks_prepared;

/* The text of a stored version, copied under the store mutex (the event holding it may be
 * freed once the mutex is released), for ks_store_prepare to reuse. */
typedef struct ks_prev_text {
    char *text;                          /* malloc'd; NULL: nothing to reuse */
    ks_member_text mem[KS_TEXT_MEMBERS]; /* offsets into text */
    int nmem;
} ks_prev_text;

/* prev gets the text of cur, the stored version (store mutex held; a reference to cur held by
 * the caller keeps mem[].val valid); empty when its event has left the history. */
void ks_store_prev_text_locked(const ks_store *s, const json_t *cur, ks_prev_text *prev);
void ks_prev_text_fini(ks_prev_text *prev);
/* Serialise obj; prev (may be NULL) lends the text of members obj shares with it. */
void ks_store_prepare(ks_prepared *p, json_t *obj /* stolen */, const ks_prev_text *prev);
/* Commit (obj handed to the store; p->text stays with p). The evicted history slot, if any,
 * goes to *evicted for ks_event_release after unlocking. Returns the new revision. */
uint64_t ks_store_commit_prepared_locked(ks_store *s, const ks_res *res, const char *ns,
                                         const char *name, ks_prepared *p, ks_event *evicted);
char *ks_prepared_text(const ks_prepared *p, uint64_t rev); /* malloc'd object JSON at rev */
json_t *ks_prepared_take(ks_prepared *p); /* the committed object (new reference); frees text */
void ks_prepared_fini(ks_prepared *p);    /* for a prepared write that was not committed */
void ks_event_release(ks_event *e);
/* The object JSON of the last committed event, malloc'd (NULL on OOM). */
char *ks_store_last_text_locked(const ks_store *s);

/* ---- API verbs (api.c) -------------------------------------------------------------------- */

typedef enum ks_verb {
    KS_VERB_GET,
    KS_VERB_LIST,
    KS_VERB_WATCH,
    KS_VERB_CREATE,
    KS_VERB_UPDATE,
    KS_VERB_PATCH,
    KS_VERB_DELETE,
    KS_VERB_OTHER, /* discovery, /sim, health */
    KS_VERB_COUNT
} ks_verb;
extern const char *const ks_verb_names[KS_VERB_COUNT];

/* Create, update or patch. subresource: NULL or "status". Returns the committed object
 * (new reference) or NULL with err set. The store is unchanged on error. text (may be NULL)
 * gets the object's JSON as serialised for the watch event (malloc'd; the caller frees it), so
 * the HTTP answer needs no second serialisation; it stays NULL for a no-op write. dry: every
 * check and the answer, but nothing is written (?dryRun=All). */
json_t *ks_api_create(ks_store *s, const ks_res *res, const char *ns, json_t *body, ks_err *err,
                      char **text, bool dry);
json_t *ks_api_update(ks_store *s, const ks_res *res, const char *ns, const char *name,
                      const char *subresource, const json_t *body, ks_err *err, char **text,
                      bool dry);
json_t *ks_api_patch(ks_store *s, const ks_res *res, const char *ns, const char *name,
                     const char *subresource, ks_patch_type t, const json_t *patch, ks_err *err,
                     char **text, bool dry);
/* Delete with DeleteOptions opts (may be NULL): preconditions, gracePeriodSeconds,
 * propagationPolicy, dryRun. An object with finalizers, or a pod on a node with a grace
 * period, only gets metadata.deletionTimestamp (a MODIFIED event; *gone = false); otherwise it
 * is removed (*gone = true). Returns the object as answered (new reference) or NULL + err.
 * gone may be NULL. */
json_t *ks_api_delete(ks_store *s, const ks_res *res, const char *ns, const char *name,
                      const json_t *opts, ks_err *err, bool *gone);
/* The autoscaling/v1 Scale of an object with spec.replicas (new reference). */
json_t *ks_scale_of(const json_t *obj);
/* PUT (patch_type < 0: body is a Scale) or PATCH (body is a patch of the Scale) on /scale:
 * writes spec.replicas. Returns the new Scale or NULL + err. */
json_t *ks_api_scale(ks_store *s, const ks_res *res, const char *ns, const char *name,
                     int patch_type, const json_t *body, ks_err *err, bool dry);
/* Internal write for the pool controller: fn builds the new state from the current one (which
 * it must not modify; copy what you change); status may change too; no precondition. fn
 * returning NULL with err->code 0 means "nothing to do". Store mutex not held. */
typedef json_t *(*ks_mutate_fn)(const json_t *cur, const void *arg, ks_err *err);
json_t *ks_api_write_internal(ks_store *s, const ks_res *res, const char *ns, const char *name,
                              ks_mutate_fn fn, const void *arg, ks_err *err);
json_t *ks_api_get(ks_store *s, const ks_res *res, const char *ns, const char *name, ks_err *err);

/* ---- list (list.c) ------------------------------------------------------------------------ */

typedef struct ks_list_opts {
    const char *rv;       /* ?resourceVersion; NULL/"" = latest, "0" = any */
    const char *rv_match; /* ?resourceVersionMatch: NULL, "Exact", "NotOlderThan" */
    const char *cont;     /* ?continue token or NULL */
    int64_t limit;        /* <= 0 = all */
    ks_lsel *lsel;        /* borrowed; NULL = everything */
    ks_fsel *fsel;
    bool fsel_set; /* a non-empty fieldSelector was given (no remainingItemCount then) */
} ks_list_opts;

/* List: ns NULL = all namespaces. Returns a …List (new reference) or NULL + err. */
json_t *ks_list(ks_store *s, const ks_res *res, const char *ns, const ks_list_opts *o, ks_err *err);
/* The same with the common options only (limit 0 = all; cont NULL or a continue token). */
json_t *ks_api_list(ks_store *s, const ks_res *res, const char *ns, const ks_lsel *ls,
                    const ks_fsel *fs, long limit, const char *cont, ks_err *err);

/* ---- validation and defaults (validate.c) -------------------------------------------------- */

/* JSON nesting accepted in a request body: jansson's parser limit (JSON_PARSER_MAX_DEPTH).
 * kube-apiserver's decoder allows 10000; deeper bodies get 400 here. Connection threads get
 * stacks large enough to merge, copy and print a body this deep (http.c). */
#define KS_MAX_DEPTH 2048
#define KS_POOL_MAX_REPLICAS 10000 /* SandboxPool spec.replicas maximum, as in the CRD schema */

/* ObjectMeta field types (400 BadRequest, as the decoder answers). */
bool ks_check_meta_types(const json_t *obj, ks_err *err);
/* Field validation of an object about to be stored (old: the stored version, NULL on create):
 * 422 Invalid with one details.causes entry per problem, like kube-apiserver. */
bool ks_validate(const ks_res *res, const json_t *obj, const json_t *old, ks_err *err);
/* Fill in the defaults kube-apiserver sets on create (pods: restartPolicy, dnsPolicy,
 * terminationGracePeriodSeconds, per-container terminationMessagePath/Policy,
 * imagePullPolicy, ...). obj is owned by the caller and modified. */
void ks_apply_defaults(const ks_res *res, json_t *obj);
/* Remove empty labels, annotations, finalizers, ownerReferences from metadata md (modified). */
void ks_drop_empty_meta(json_t *md);
/* Whether ks_apply_defaults would change obj's spec (cheap lookups, no copy). */
bool ks_needs_defaults(const ks_res *res, const json_t *obj);
/* status.qosClass of a pod spec: BestEffort, Burstable or Guaranteed (static string). */
const char *ks_pod_qos_class(const json_t *spec);

/* ---- watch (watch.c) ---------------------------------------------------------------------- */

typedef struct ks_faults ks_faults;
typedef struct ks_watch ks_watch;
typedef struct ks_watch_opts {
    const ks_res *res;
    const char *ns; /* NULL = all namespaces */
    ks_lsel *lsel;  /* owned by the watch from here on (may be NULL) */
    ks_fsel *fsel;  /* same */
    const char *rv; /* NULL/""/"0": synthetic ADDED for current objects first */
    bool bookmarks;
    int64_t timeout_ns;  /* 0 = none */
    int64_t bookmark_ns; /* bookmark interval */
    int peer_fd;      /* client socket, checked for a hang-up while idle; <= 0: none (0 is stdin) */
    int64_t batch_ns; /* after sending, gather for this long before sending again; 0 = off */
    bool table;       /* send each object as a Table (kubectl get -w) */
} ks_watch_opts;

/* Start a watch; returns NULL with err set (e.g. 400 for a bad resourceVersion). The 410 for a
 * compacted resourceVersion is not an error here: it is sent as an ERROR event, like the real
 * server does for watches. */
ks_watch *ks_watch_new(ks_store *s, ks_faults *f, const ks_watch_opts *o, ks_err *err);
/* Fill buf with up to max bytes of event lines, blocking until there are some. Returns the
 * number of bytes, 0 at the end of the stream, -1 to drop the connection abruptly. */
long ks_watch_read(ks_watch *w, char *buf, size_t max);
void ks_watch_free(ks_watch *w);

/* ---- faults and statistics (faults.c) ----------------------------------------------------- */

typedef struct ks_latency {
    int64_t fixed_us;
    int64_t jitter_us;
} ks_latency;

typedef struct ks_fault_cfg {
    ks_latency latency[KS_VERB_COUNT];
    double conflict_rate; /* PATCH/PUT answered 409 Conflict without writing, 0..1 */
    double throttle_rate; /* any API verb answered 429 with Retry-After, 0..1 */
    /* throttle only requests naming this object ("" = every request): one pod's writes
     * answered 429 while the others' pass (a test of who waits for a Retry-After) */
    char throttle_name[256];
    /* throttle only this verb, 1 + KS_VERB_* (0, a zeroed config: every verb): e.g. only
     * creates, while the same client's PATCHes pass */
    int throttle_verb;
    int retry_after_s;
    double error_rate; /* any API verb answered error_code, 0..1 */
    int error_code;    /* 500 or 503 (default 500) */
    /* errors only for this verb, as throttle_verb: e.g. failed PATCHes while watches and
     * the lease's GETs pass */
    int error_verb;
    uint64_t watch_drop_events; /* drop each watch after this many events; 0 = never */
    int64_t watch_drop_ms;      /* drop each watch after this long; 0 = never */
    int64_t watch_delay_ms;     /* deliver watch events this long after commit */
} ks_fault_cfg;

struct ks_faults {
    pthread_mutex_t mu;
    ks_fault_cfg cfg;
    uint64_t rng;                                /* xorshift state, under mu */
    _Atomic uint64_t counts[KS_VERB_COUNT][600]; /* requests by verb and HTTP code */
    _Atomic uint64_t watch_events;               /* event lines sent to watchers */
    _Atomic uint64_t watches_open;
};

void ks_faults_init(ks_faults *f);
void ks_faults_fini(ks_faults *f);
ks_fault_cfg ks_faults_get(ks_faults *f);
void ks_faults_set(ks_faults *f, const ks_fault_cfg *c);
double ks_faults_rand(ks_faults *f); /* uniform [0,1) */
json_t *ks_faults_to_json(const ks_fault_cfg *c);
/* Parse a /sim/faults body over a copy of *c; on error returns -1 with err set, c unchanged. */
int ks_faults_from_json(ks_fault_cfg *c, const json_t *j, ks_err *err);
/* Parse "verb=fixed[+jitter]" (milliseconds) into c. */
int ks_faults_parse_latency(ks_fault_cfg *c, const char *arg);
json_t *ks_stats_json(ks_faults *f, ks_store *s);
void ks_faults_count(ks_faults *f, ks_verb v, int code);

/* ---- pool controller (controller.c) ------------------------------------------------------- */

typedef struct ks_controller ks_controller;
typedef struct ks_controller_opts {
    /* the kubelet (controller.c): a pod starts (Running + Ready) warmup_ms after its creation,
     * restarts a container whose image changed (Ready again after restart_ms), and is deleted
     * stop_ms after its deletionTimestamp (graceful deletion). No pool controller. */
    int64_t warmup_ms;
    int64_t stop_ms;
    int64_t restart_ms;
    bool never_ready;         /* no pod ever becomes Ready */
    bool no_kubelet;          /* no pod is started or restarted (a cluster without nodes) */
    size_t claims_max;        /* claim log bound; transitions beyond it are counted as dropped */
    int64_t compact_every_ms; /* injected fault: compact the whole history this often; 0 = never */
} ks_controller_opts;

ks_controller *ks_controller_new(ks_store *s, const ks_controller_opts *o);
int ks_controller_start(ks_controller *c);
void ks_controller_free(ks_controller *c); /* stops the thread */
/* The claim log from entry index since: {"claims":[...],"count":N,"dropped":D}. */
json_t *ks_controller_claims_json(ks_controller *c, size_t since);

/* ---- objects file, YAML (objects.c) ------------------------------------------------------- */

/* Parse YAML (one or more documents) or JSON text into an array of objects ("List" kinds are
 * flattened). Returns NULL with err set. */
json_t *ks_objects_parse(const char *text, size_t len, ks_err *err);
/* Create every object of the array in the store (namespaces first). Returns 0 or -1 + err. */
int ks_objects_load(ks_store *s, const json_t *arr, ks_err *err);

/* ---- discovery (discovery.c): new references; NULL = unknown group/version ---------------- */

json_t *ks_discovery_version(void);
json_t *ks_discovery_core(const char *server_addr);
json_t *ks_discovery_groups(void);
json_t *ks_discovery_group(const char *group);
json_t *ks_discovery_resources(const char *group, const char *version);
json_t *ks_openapi_root(void);
json_t *ks_openapi_gv(const char *group, const char *version);

/* ---- server (http.c) ---------------------------------------------------------------------- */

typedef struct ks_server ks_server;
typedef struct ks_server_opts {
    const char *listen;   /* "host:port"; port 0 = ephemeral */
    const char *token;    /* bearer token; NULL = no auth */
    const char *tls_cert; /* PEM file paths; both or neither */
    const char *tls_key;
    int64_t bookmark_ms;     /* watch bookmark interval */
    int64_t watch_batch_us;  /* see ks_watch_opts.batch_ns */
    unsigned conn_timeout_s; /* close a connection idle this long (a slow client); 0 = 90 */
} ks_server_opts;

/* Start serving; returns NULL with a message in err. The server borrows s, f and c. */
ks_server *ks_server_start(const ks_server_opts *o, ks_store *s, ks_faults *f, ks_controller *c,
                           char *err, size_t errlen);
int ks_server_port(const ks_server *srv);
const char *ks_server_addr(const ks_server *srv); /* "host:port", valid until stop */
/* Stops accepting, ends every watch and waits for connection threads. */
void ks_server_stop(ks_server *srv);

/* ---- server-side printing (table.c) ------------------------------------------------------- */

bool ks_accepts_table(const char *accept_header);
/* A meta.k8s.io/v1 Table for one object or a …List (new reference). */
json_t *ks_table(const ks_res *res, const json_t *obj_or_list);

/* ---- misc (util in api.c) ----------------------------------------------------------------- */

int64_t ks_now_ns(void); /* CLOCK_MONOTONIC */
void ks_rfc3339_now(char *buf, size_t n);
/* Create a namespace if it does not exist (store mutex not held). */
void ks_ensure_namespace(ks_store *s, const char *ns);
const char *ks_meta_str(const json_t *obj, const char *field); /* metadata.<field> string */
/* A fresh uid for a new object (store mutex held: uses the store's sequence). */
void ks_new_uid_locked(ks_store *s, char *buf, size_t n);

#endif
