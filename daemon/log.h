/* podclaimd logging: one line per event on stderr, `level=... key=value ...` (logfmt) or the
 * same pairs as one JSON object per line (log.format json).
 *
 * Callers write logfmt; the JSON form is converted from it, so there is one way to log.
 * Never pass a token or an Authorization header (STYLE.md).
 * Thread-safety: any thread; a line is written with one fwrite under stderr's lock.
 */
#ifndef PODCLAIM_DAEMON_LOG_H
#define PODCLAIM_DAEMON_LOG_H

#include <stdbool.h>

/* Levels as PC_KUBE_LOG_*: 0 error .. 3 debug. */
void pcd_log_setup(int level, bool json);
bool pcd_log_enabled(int level);

/* fmt renders the pairs after level=: e.g. pcd_logf(2, "pool=%s msg=\"synced\"", key). */
void pcd_logf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Write a line that already starts with level=... (the kube client's log callback). */
void pcd_log_line(void *arg, int level, const char *line);

#define PCD_ERROR 0
#define PCD_WARN 1
#define PCD_INFO 2
#define PCD_DEBUG 3

#endif
