/* pc_backend_wrap: a wrapping backend's loop hooks, forwarded to the inner backend's. */
#include <podclaim/backend.h>

#include <stdbool.h>
#include <stddef.h>

/* The pool calls a hook with the pointer it was given, &w->iface: the wrapper itself, since
 * iface is its first member. */
static pc_backend *inner_of(pc_backend *b)
{
    return ((pc_backend_wrapper *)b)->inner;
}

static int fwd_attach(pc_backend *b)
{
    pc_backend *in = inner_of(b);
    return in->attach(in);
}

static void fwd_wait(pc_backend *b, int64_t deadline_ns)
{
    pc_backend *in = inner_of(b);
    in->wait(in, deadline_ns);
}

static void fwd_wake(pc_backend *b)
{
    pc_backend *in = inner_of(b);
    in->wake(in);
}

static void fwd_detach(pc_backend *b)
{
    pc_backend *in = inner_of(b);
    in->detach(in);
}

void pc_backend_wrap(pc_backend_wrapper *w, pc_backend *inner)
{
    w->inner = inner;
    bool hooks = inner->attach && inner->wait && inner->wake && inner->detach;
    w->iface.attach = hooks ? fwd_attach : NULL;
    w->iface.wait = hooks ? fwd_wait : NULL;
    w->iface.wake = hooks ? fwd_wake : NULL;
    w->iface.detach = hooks ? fwd_detach : NULL;
}
