/* Helpers shared by the cluster controllers (daemon/cluster): logging, clocks, URL encoding,
 * RFC 3339 times, JSON requests on a pc_kube_conn, jansson path lookups.
 *
 * Flow: every cluster module (watch, elector, pool/claim controllers, events, webhooks) ->
 *       [util] -> the kube client's public API (include/podclaim/kube.h).
 *
 * Internal to daemon/cluster: not part of the daemon's interface. Thread-safe: every function
 * touches only its arguments.
 */
#ifndef PODCLAIM_CLUSTER_UTIL_H
#define PODCLAIM_CLUSTER_UTIL_H

#include "cluster.h"

#include <podclaim/kube.h>

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One log line "level=<l> component=<c> ..." through lg (NULL or lg->fn NULL = stderr), if
 * level passes lg->level. */
void pc__cl_log(const pc_cluster_log *lg, int level, const char *component, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

int64_t pc__cl_mono_ns(void); /* CLOCK_MONOTONIC */
int64_t pc__cl_real_ns(void); /* CLOCK_REALTIME (unix ns) */

/* Unix ns -> "2026-01-02T03:04:05Z" (micro = false) or "…05.123456Z" (micro = true, the
 * MicroTime of Leases and Events). buf >= 32 bytes. */
void pc__cl_rfc3339(int64_t unix_ns, bool micro, char *buf, size_t len);
/* RFC 3339 (with or without fraction, Z or +hh:mm) -> unix ns; -1 when malformed. */
int64_t pc__cl_parse_time(const char *s);

/* Percent-encode a query value into out. Returns 0 or -EMSGSIZE. */
int pc__cl_urlenc(const char *s, char *out, size_t len);

/* A request with a JSON body (NULL = none) whose 2xx answer is parsed. Returns 0 with
 * *status set (and *out the parsed body for a 2xx JSON answer, else NULL; may be NULL to
 * ignore), or a transfer error (negative errno). err (may be NULL) gets the server's
 * message for a non-2xx status or the transfer error. */
int pc__cl_request(pc_kube_conn *k, const char *method, const char *path, const char *ctype,
                   const json_t *body, long *status, json_t **out, char *err, size_t errlen);
/* The same without the 429 retry (pc_kube_conn_request_once): a 429 is answered as it is,
 * *retry_after_ns the wait it asks for (pc_kube_retry_wait_ns; 0 for any other answer). */
int pc__cl_request_once(pc_kube_conn *k, const char *method, const char *path, const char *ctype,
                        const json_t *body, long *status, json_t **out, char *err, size_t errlen,
                        int64_t *retry_after_ns);

/* obj.a.b.c lookups: the value or NULL. path is "a.b.c" (no escaping; keys with dots use
 * json_object_get directly). */
json_t *pc__cl_jget(const json_t *obj, const char *path);
const char *pc__cl_jstr(const json_t *obj, const char *path); /* NULL unless a string */
const char *pc__cl_label(const json_t *obj, const char *key);
const char *pc__cl_annotation(const json_t *obj, const char *key);

/* True when a and b are decimal resourceVersions and a < b (see the informer: versions are
 * opaque, but every server in practice uses etcd revisions). */
bool pc__cl_rv_older(const char *a, const char *b);

/* xorshift64; state must be non-zero. */
uint64_t pc__cl_rand(uint64_t *state);

#endif /* PODCLAIM_CLUSTER_UTIL_H */
