/* Binary min-heap of claims by timer. See timer_heap.h. */
#include "pool/timer_heap.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

void pc__timer_heap_init(pc__timer_heap *h)
{
    h->items = NULL;
    h->len = 0;
    h->cap = 0;
}

void pc__timer_heap_fini(pc__timer_heap *h)
{
    free(h->items);
    pc__timer_heap_init(h);
}

static void place(pc__timer_heap *h, size_t i, pc_claim *c)
{
    h->items[i] = c;
    c->priv.heap_index = i;
}

static void sift_up(pc__timer_heap *h, size_t i)
{
    pc_claim *c = h->items[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->items[parent]->priv.timer_at_ns <= c->priv.timer_at_ns)
            break;
        place(h, i, h->items[parent]);
        i = parent;
    }
    place(h, i, c);
}

static void sift_down(pc__timer_heap *h, size_t i)
{
    pc_claim *c = h->items[i];
    for (;;) {
        size_t l = 2 * i + 1, best = i;
        int64_t best_at = c->priv.timer_at_ns;
        if (l < h->len && h->items[l]->priv.timer_at_ns < best_at) {
            best = l;
            best_at = h->items[l]->priv.timer_at_ns;
        }
        if (l + 1 < h->len && h->items[l + 1]->priv.timer_at_ns < best_at)
            best = l + 1;
        if (best == i)
            break;
        place(h, i, h->items[best]);
        i = best;
    }
    place(h, i, c);
}

int pc__timer_heap_push(pc__timer_heap *h, pc_claim *c)
{
    if (h->len == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        pc_claim **items = realloc(h->items, cap * sizeof(*items));
        if (items == NULL)
            return -ENOMEM;
        h->items = items;
        h->cap = cap;
    }
    h->items[h->len] = c;
    sift_up(h, h->len++);
    return 0;
}

void pc__timer_heap_remove(pc__timer_heap *h, pc_claim *c)
{
    size_t i = c->priv.heap_index;
    if (i == SIZE_MAX || i >= h->len || h->items[i] != c)
        return;
    c->priv.heap_index = SIZE_MAX;
    pc_claim *last = h->items[--h->len];
    if (i == h->len)
        return;
    place(h, i, last);
    if (i > 0 && h->items[(i - 1) / 2]->priv.timer_at_ns > last->priv.timer_at_ns)
        sift_up(h, i);
    else
        sift_down(h, i);
}

pc_claim *pc__timer_heap_top(const pc__timer_heap *h)
{
    return h->len ? h->items[0] : NULL;
}
