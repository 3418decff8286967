/* kapi-sim HTTP internals shared by http.c (libmicrohttpd glue, auth, /sim, discovery) and
 * resource.c (the routing table of resources x verbs and its handlers).
 *
 * Every handler answers exactly once through ks_send_*; each of those counts the answer in the
 * statistics under the verb given.
 */
#ifndef PODCLAIM_KAPI_SIM_HTTP_H
#define PODCLAIM_KAPI_SIM_HTTP_H

#include "sim.h"

#include <microhttpd.h>

struct ks_server {
    struct MHD_Daemon *d;
    ks_store *s;
    ks_faults *f;
    ks_controller *c;
    char *token;
    char *tls_cert, *tls_key; /* PEM text, kept for the daemon's lifetime */
    int64_t bookmark_ms;
    int64_t watch_batch_us;
    int port;
    char addr[64];
};

/* A request body as it arrives; bodies over KS_MAX_BODY are dropped and flagged. */
typedef struct ks_req {
    char *body;
    size_t len, cap;
    bool too_big;
} ks_req;

enum MHD_Result ks_send_text(struct MHD_Connection *conn, ks_faults *f, ks_verb v, int code,
                             char *text /* freed */, const char *ctype, int retry_after);
enum MHD_Result ks_send_json(struct MHD_Connection *conn, ks_faults *f, ks_verb v, int code,
                             json_t *j /* stolen */);
enum MHD_Result ks_send_err(struct MHD_Connection *conn, ks_faults *f, ks_verb v, const ks_err *e,
                            const ks_res *res, const char *name);
/* The request body as JSON (400 with the parser's position when it is not). */
json_t *ks_parse_body(const ks_req *rq, ks_err *err);

/* ---- query parameters, checked as kube-apiserver's decoder checks them ------------------- */

/* The value of ?key (NULL when absent; "" for a bare ?key). */
const char *ks_query(struct MHD_Connection *c, const char *key);
/* Kubernetes query booleans: absent, "", no: an absent value, "0" and "false" (any case) are
 * false; anything else, a bare ?key included, is true (runtime.Convert_Slice_string_To_bool). */
bool ks_query_bool(struct MHD_Connection *c, const char *key);
/* An integer parameter in [lo, hi]; *out keeps its value when absent. Returns 0, or -1 with a
 * 400 BadRequest in err for anything that is not a whole decimal number in range. */
int ks_query_int(struct MHD_Connection *c, const char *key, int64_t lo, int64_t hi, int64_t *out,
                 ks_err *err);

/* Route /api/v1/... and /apis/{g}/{v}/... (seg: the segments after the version). */
enum MHD_Result ks_handle_resource(ks_server *srv, struct MHD_Connection *conn, const char *method,
                                   const char *group, const char *version, char **seg, int nseg,
                                   const ks_req *rq);

#endif
