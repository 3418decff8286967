/* Watch-stream framer: lines split across chunks, many per chunk, oversized, truncated. */
#include "framer.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct lines {
    char *v[4096];
    size_t n;
    int stop_at; /* return 7 when line number stop_at (1-based) is delivered; 0 = never */
} lines;

static int collect(void *arg, const char *line, size_t len)
{
    lines *l = arg;
    cr_assert_lt(l->n, 4096u);
    l->v[l->n] = strndup(line, len);
    l->n++;
    return (l->stop_at && (int)l->n == l->stop_at) ? 7 : 0;
}

static void lines_free(lines *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    l->n = 0;
}

Test(framer, delivers_each_line_of_one_chunk)
{
    pc__framer f;
    lines l = {0};
    pc__framer_init(&f, 0);
    const char *s = "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n";
    cr_assert_eq(pc__framer_feed(&f, s, strlen(s), collect, &l), 0);
    cr_assert_eq(l.n, 3u, "expected 3 lines, got %zu", l.n);
    cr_assert_str_eq(l.v[0], "{\"a\":1}");
    cr_assert_str_eq(l.v[2], "{\"c\":3}");
    cr_assert_eq(pc__framer_pending(&f), 0u);
    lines_free(&l);
    pc__framer_fini(&f);
}

Test(framer, joins_a_line_split_at_every_byte)
{
    const char *s = "{\"type\":\"ADDED\",\"object\":{}}\n{\"type\":\"MODIFIED\"}\r\n";
    pc__framer f;
    lines l = {0};
    pc__framer_init(&f, 0);
    for (size_t i = 0; i < strlen(s); i++)
        cr_assert_eq(pc__framer_feed(&f, s + i, 1, collect, &l), 0);
    cr_assert_eq(l.n, 2u, "expected 2 lines, got %zu", l.n);
    cr_assert_str_eq(l.v[0], "{\"type\":\"ADDED\",\"object\":{}}");
    cr_assert_str_eq(l.v[1], "{\"type\":\"MODIFIED\"}", "CR must be stripped, got %s", l.v[1]);
    lines_free(&l);
    pc__framer_fini(&f);
}

Test(framer, handles_every_split_point_of_a_three_line_stream)
{
    const char *s = "aaa\nbbbbbb\ncc\n";
    size_t n = strlen(s);
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            pc__framer f;
            lines l = {0};
            pc__framer_init(&f, 0);
            cr_assert_eq(pc__framer_feed(&f, s, a, collect, &l), 0);
            cr_assert_eq(pc__framer_feed(&f, s + a, b - a, collect, &l), 0);
            cr_assert_eq(pc__framer_feed(&f, s + b, n - b, collect, &l), 0);
            cr_assert_eq(l.n, 3u, "split %zu/%zu: expected 3 lines, got %zu", a, b, l.n);
            cr_assert_str_eq(l.v[1], "bbbbbb", "split %zu/%zu", a, b);
            lines_free(&l);
            pc__framer_fini(&f);
        }
    }
}

Test(framer, skips_empty_lines)
{
    pc__framer f;
    lines l = {0};
    pc__framer_init(&f, 0);
    const char *s = "\n\r\nx\n\n";
    cr_assert_eq(pc__framer_feed(&f, s, strlen(s), collect, &l), 0);
    cr_assert_eq(l.n, 1u, "expected 1 line, got %zu", l.n);
    lines_free(&l);
    pc__framer_fini(&f);
}

Test(framer, grows_for_a_line_bigger_than_its_first_buffer)
{
    size_t big = 3u << 20; /* 3 MiB event, fed in 1000-byte chunks */
    char *s = malloc(big + 2);
    memset(s, 'x', big);
    s[0] = '{';
    s[big - 1] = '}';
    s[big] = '\n';
    pc__framer f;
    lines l = {0};
    pc__framer_init(&f, 4u << 20);
    for (size_t off = 0; off < big + 1; off += 1000) {
        size_t n = big + 1 - off < 1000 ? big + 1 - off : 1000;
        cr_assert_eq(pc__framer_feed(&f, s + off, n, collect, &l), 0);
    }
    cr_assert_eq(l.n, 1u);
    cr_assert_eq(strlen(l.v[0]), big, "expected %zu bytes, got %zu", big, strlen(l.v[0]));
    lines_free(&l);
    pc__framer_fini(&f);
    free(s);
}

Test(framer, refuses_a_line_over_the_bound_and_recovers_after_reset)
{
    pc__framer f;
    lines l = {0};
    pc__framer_init(&f, 16);
    const char *a = "0123456789";
    cr_assert_eq(pc__framer_feed(&f, a, 10, collect, &l), 0);
    int rc = pc__framer_feed(&f, a, 10, collect, &l); /* 20 bytes, no newline yet */
    cr_assert_eq(rc, -EMSGSIZE, "expected -EMSGSIZE, got %d", rc);
    cr_assert_eq(pc__framer_pending(&f), 0u);
    /* a complete over-long line in a single chunk is refused too */
    rc = pc__framer_feed(&f, "0123456789abcdefXYZ\n", 20, collect, &l);
    cr_assert_eq(rc, -EMSGSIZE, "expected -EMSGSIZE, got %d", rc);
    pc__framer_reset(&f);
    cr_assert_eq(pc__framer_feed(&f, "ok\n", 3, collect, &l), 0);
    cr_assert_eq(l.n, 1u);
    cr_assert_str_eq(l.v[0], "ok");
    lines_free(&l);
    pc__framer_fini(&f);
}

Test(framer, accepts_a_line_exactly_at_the_bound)
{
    pc__framer f;
    lines l = {0};
    pc__framer_init(&f, 8);
    cr_assert_eq(pc__framer_feed(&f, "1234", 4, collect, &l), 0);
    cr_assert_eq(pc__framer_feed(&f, "5678\r\n", 6, collect, &l), 0);
    cr_assert_eq(l.n, 1u);
    cr_assert_str_eq(l.v[0], "12345678");
    lines_free(&l);
    pc__framer_fini(&f);
}

Test(framer, reports_a_truncated_last_line)
{
    pc__framer f;
    lines l = {0};
    pc__framer_init(&f, 0);
    const char *s = "{\"complete\":1}\n{\"trunc";
    cr_assert_eq(pc__framer_feed(&f, s, strlen(s), collect, &l), 0);
    cr_assert_eq(l.n, 1u);
    cr_assert_eq(pc__framer_pending(&f), strlen("{\"trunc"), "pending %zu", pc__framer_pending(&f));
    pc__framer_reset(&f);
    cr_assert_eq(pc__framer_pending(&f), 0u);
    lines_free(&l);
    pc__framer_fini(&f);
}

Test(framer, stops_when_the_callback_says_so)
{
    pc__framer f;
    lines l = {.stop_at = 2};
    pc__framer_init(&f, 0);
    const char *s = "a\nb\nc\n";
    int rc = pc__framer_feed(&f, s, strlen(s), collect, &l);
    cr_assert_eq(rc, 7, "expected the callback's 7, got %d", rc);
    cr_assert_eq(l.n, 2u, "no line after the stop: got %zu", l.n);
    lines_free(&l);
    pc__framer_fini(&f);
}

Test(framer, delivers_many_small_events_in_random_chunks)
{
    /* 2000 events, chunk sizes from a fixed PRNG: every event arrives once, in order. */
    char *s = malloc(2000 * 32);
    size_t n = 0;
    for (int i = 0; i < 2000; i++)
        n += (size_t)sprintf(s + n, "{\"i\":%d}\n", i);
    pc__framer f;
    static lines l;
    l.n = 0;
    pc__framer_init(&f, 64);
    uint32_t x = 12345;
    for (size_t off = 0; off < n;) {
        x = x * 1103515245u + 12345u;
        size_t c = 1 + (x >> 16) % 97;
        if (c > n - off)
            c = n - off;
        cr_assert_eq(pc__framer_feed(&f, s + off, c, collect, &l), 0);
        off += c;
    }
    cr_assert_eq(l.n, 2000u, "expected 2000 events, got %zu", l.n);
    for (int i = 0; i < 2000; i++) {
        char want[32];
        sprintf(want, "{\"i\":%d}", i);
        cr_assert_str_eq(l.v[i], want);
    }
    lines_free(&l);
    pc__framer_fini(&f);
    free(s);
}
