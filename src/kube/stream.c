/* The public face of the conn's streaming transfers (kube.h "streaming and interruption"):
 * thin wrappers over the internal stream/idle/sleep functions the informer uses, so code
 * outside src/ (the daemon's cluster controllers) can run watches through the public API.
 *
 * Flow: daemon watches -> [this] -> conn.c transfers -> API server.
 */
#include "kube_internal.h"

void pc_kube_conn_set_idle(pc_kube_conn *k, pc_kube_idle_fn fn, void *arg)
{
    pc__kube_conn_set_idle(k, fn, arg);
}

void pc_kube_conn_wakeup(pc_kube_conn *k)
{
    pc__kube_conn_wakeup(k);
}

int pc_kube_conn_stream(pc_kube_conn *k, const char *path, size_t max_line, int64_t timeout_ns,
                        pc_kube_line_fn on_line, void *arg, int *line_rc, pc_kube_response *out)
{
    pc__kube_stream s = {
            .max_line = max_line, .on_line = on_line, .arg = arg, .timeout_ns = timeout_ns};
    int rc = pc__kube_conn_stream(k, path, &s, out);
    if (line_rc)
        *line_rc = s.line_rc;
    return rc;
}

int pc_kube_conn_sleep(pc_kube_conn *k, int64_t ns)
{
    return pc__kube_conn_sleep(k, ns);
}
