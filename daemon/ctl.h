/* podclaimctl internals shared by podclaimctl.c and load.c. */
#ifndef PODCLAIM_DAEMON_CTL_H
#define PODCLAIM_DAEMON_CTL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* "5s", "250ms", "2m", bare seconds; -1 when malformed. */
double ctl_parse_duration(const char *s);
/* Claim options (--image, --label, --annotation, --priority, --timeout, --id, --phase, --env,
 * --tag) from argv[*i..] into a request body; the first bare word is the NS/POOL. With
 * allow_other, stops at an unknown option (for load's own flags). NULL on a bad option. */
json_t *ctl_claim_body(int argc, char **argv, int *i, const char **env, const char **pool,
                       bool allow_other);
/* "/v1/pools/NS/POOL/claims" or "/v1/envs/ENV/claims"; -1 (message printed) when neither. */
int ctl_claim_path(const char *pool, const char *env, char *path, size_t len);
/* podclaimctl load ... */
int ctl_load(const char *server, const char *token, int argc, char **argv);

#endif
