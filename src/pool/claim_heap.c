/* Binary min-heaps of claims. See claim_heap.h. */
#include "pool/claim_heap.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#define MIN_CAP 64

void pc__claim_heap_init(pc__claim_heap *h, pc__heap_kind kind)
{
    h->items = NULL;
    h->len = 0;
    h->cap = 0;
    h->kind = kind;
}

void pc__claim_heap_fini(pc__claim_heap *h)
{
    free(h->items);
    pc__claim_heap_init(h, h->kind);
}

/* The branch on kind is taken the same way for every call on one heap: predicted. */
static bool before(const pc__claim_heap *h, const pc_claim *a, const pc_claim *b)
{
    if (h->kind == PC__HEAP_TIMER)
        return a->priv.timer_at_ns < b->priv.timer_at_ns;
    return a->enqueued_at_ns < b->enqueued_at_ns ||
           (a->enqueued_at_ns == b->enqueued_at_ns && a->priv.seq < b->priv.seq);
}

static size_t *index_of(const pc__claim_heap *h, pc_claim *c)
{
    return h->kind == PC__HEAP_TIMER ? &c->priv.timer_index : &c->priv.level_index;
}

static void place(pc__claim_heap *h, size_t i, pc_claim *c)
{
    h->items[i] = c;
    *index_of(h, c) = i;
}

static void sift_up(pc__claim_heap *h, size_t i)
{
    pc_claim *c = h->items[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(h, c, h->items[parent]))
            break;
        place(h, i, h->items[parent]);
        i = parent;
    }
    place(h, i, c);
}

static void sift_down(pc__claim_heap *h, size_t i)
{
    pc_claim *c = h->items[i];
    for (;;) {
        size_t l = 2 * i + 1, best = i;
        const pc_claim *best_c = c;
        if (l < h->len && before(h, h->items[l], best_c)) {
            best = l;
            best_c = h->items[l];
        }
        if (l + 1 < h->len && before(h, h->items[l + 1], best_c))
            best = l + 1;
        if (best == i)
            break;
        place(h, i, h->items[best]);
        i = best;
    }
    place(h, i, c);
}

static void resize(pc__claim_heap *h, size_t cap)
{
    pc_claim **items = realloc(h->items, cap * sizeof(*items));
    if (items == NULL)
        return; /* growing: the caller sees no room; shrinking: keep the larger array */
    h->items = items;
    h->cap = cap;
}

int pc__claim_heap_push(pc__claim_heap *h, pc_claim *c)
{
    if (h->len == h->cap) {
        resize(h, h->cap ? h->cap * 2 : MIN_CAP);
        if (h->len == h->cap)
            return -ENOMEM;
    }
    h->items[h->len] = c;
    sift_up(h, h->len++);
    return 0;
}

void pc__claim_heap_remove(pc__claim_heap *h, pc_claim *c)
{
    size_t *pos = index_of(h, c);
    size_t i = *pos;
    if (i == SIZE_MAX || i >= h->len || h->items[i] != c)
        return;
    *pos = SIZE_MAX;
    pc_claim *last = h->items[--h->len];
    if (i != h->len) {
        place(h, i, last);
        if (i > 0 && before(h, last, h->items[(i - 1) / 2]))
            sift_up(h, i);
        else
            sift_down(h, i);
    }
    if (h->cap > MIN_CAP && h->len < h->cap / 4)
        resize(h, h->cap / 2);
}

/* ---- levels ------------------------------------------------------------------------------ */

void pc__claim_level_init(pc__claim_level *l)
{
    l->head = l->tail = NULL;
    pc__claim_heap_init(&l->late, PC__HEAP_LEVEL);
}

void pc__claim_level_fini(pc__claim_level *l)
{
    pc__claim_heap_fini(&l->late);
}

int pc__claim_level_push(pc__claim_level *l, pc_claim *c)
{
    if (l->tail != NULL && before(&l->late, c, l->tail))
        return pc__claim_heap_push(&l->late, c);
    c->priv.level_index = PC__IN_LIST;
    c->priv.next = NULL;
    c->priv.prev = l->tail;
    if (l->tail)
        l->tail->priv.next = c;
    else
        l->head = c;
    l->tail = c;
    return 0;
}

void pc__claim_level_remove(pc__claim_level *l, pc_claim *c)
{
    if (c->priv.level_index != PC__IN_LIST) {
        pc__claim_heap_remove(&l->late, c);
        return;
    }
    if (c->priv.prev)
        c->priv.prev->priv.next = c->priv.next;
    else
        l->head = c->priv.next;
    if (c->priv.next)
        c->priv.next->priv.prev = c->priv.prev;
    else
        l->tail = c->priv.prev;
    c->priv.prev = c->priv.next = NULL;
    c->priv.level_index = SIZE_MAX;
}

pc_claim *pc__claim_level_top(const pc__claim_level *l)
{
    pc_claim *h = pc__claim_heap_top(&l->late);
    if (h == NULL || (l->head != NULL && before(&l->late, l->head, h)))
        return l->head;
    return h;
}
