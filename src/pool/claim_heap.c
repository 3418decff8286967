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

/* The key lives in the array beside the pointer: comparisons never touch a claim (with
 * 200k claims waiting, each comparison through the pointer was a cache miss). */
static pc__heap_item item_of(const pc__claim_heap *h, pc_claim *c)
{
    if (h->kind == PC__HEAP_TIMER)
        return (pc__heap_item){c->priv.timer_at_ns, 0, c};
    return (pc__heap_item){c->enqueued_at_ns, c->priv.seq, c};
}

static bool before(const pc__heap_item *a, const pc__heap_item *b)
{
    return a->key < b->key || (a->key == b->key && a->tie < b->tie);
}

static size_t *index_of(const pc__claim_heap *h, pc_claim *c)
{
    return h->kind == PC__HEAP_TIMER ? &c->priv.timer_index : &c->priv.level_index;
}

static void place(pc__claim_heap *h, size_t i, pc__heap_item it)
{
    h->items[i] = it;
    *index_of(h, it.c) = i;
}

static void sift_up(pc__claim_heap *h, size_t i)
{
    pc__heap_item it = h->items[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&it, &h->items[parent]))
            break;
        place(h, i, h->items[parent]);
        i = parent;
    }
    place(h, i, it);
}

static void sift_down(pc__claim_heap *h, size_t i)
{
    pc__heap_item it = h->items[i];
    for (;;) {
        size_t l = 2 * i + 1, best = i;
        const pc__heap_item *best_it = &it;
        if (l < h->len && before(&h->items[l], best_it)) {
            best = l;
            best_it = &h->items[l];
        }
        if (l + 1 < h->len && before(&h->items[l + 1], best_it))
            best = l + 1;
        if (best == i)
            break;
        place(h, i, h->items[best]);
        i = best;
    }
    place(h, i, it);
}

static void resize(pc__claim_heap *h, size_t cap)
{
    pc__heap_item *items = realloc(h->items, cap * sizeof(*items));
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
    h->items[h->len] = item_of(h, c);
    sift_up(h, h->len++);
    return 0;
}

void pc__claim_heap_remove(pc__claim_heap *h, pc_claim *c)
{
    size_t *pos = index_of(h, c);
    size_t i = *pos;
    if (i == SIZE_MAX || i >= h->len || h->items[i].c != c)
        return;
    *pos = SIZE_MAX;
    pc__heap_item last = h->items[--h->len];
    if (i != h->len) {
        place(h, i, last);
        if (i > 0 && before(&last, &h->items[(i - 1) / 2]))
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
    pc__heap_item it = item_of(&l->late, c), tail;
    if (l->tail != NULL && (tail = item_of(&l->late, l->tail), before(&it, &tail)))
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
    if (l->late.len == 0)
        return l->head;
    if (l->head == NULL)
        return l->late.items[0].c;
    pc__heap_item head = item_of(&l->late, l->head);
    return before(&head, &l->late.items[0]) ? l->head : l->late.items[0].c;
}
