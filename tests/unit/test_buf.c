/* The growable byte buffer's additions (storage/base/buf.c): append in place,
 * printf, reserve without latching, reset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tern/error.h"
#include "tern/storage.h"

static void test_append(void **state)
{
    (void)state;
    struct tern_wbuf w;
    tern_wbuf_init(&w);
    uint8_t *p = tern_wbuf_append(&w, 4);
    assert_non_null(p);
    memcpy(p, "\x00\x00\x01\x02", 4); /* big-endian, which the puts do not write */
    tern_wbuf_put_u8(&w, 9);
    assert_int_equal(w.len, 5);
    assert_memory_equal(w.buf, "\x00\x00\x01\x02\x09", 5);
    /* Growth keeps what was written. */
    for (int i = 0; i < 1000; i++)
        assert_non_null(tern_wbuf_append(&w, 7));
    assert_int_equal(w.len, 5 + 7000);
    assert_memory_equal(w.buf, "\x00\x00\x01\x02\x09", 5);
    tern_wbuf_free(&w);
}

static void test_printf(void **state)
{
    (void)state;
    struct tern_wbuf w;
    tern_wbuf_init(&w);
    tern_wbuf_printf(&w, "%s %d\n", "tern_connections", 3);
    assert_int_equal(w.len, 19);
    assert_string_equal((char *)w.buf, "tern_connections 3\n");
    /* Past the first capacity (256) and again past the next ones. */
    char big[600];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    for (int i = 0; i < 10; i++)
        tern_wbuf_printf(&w, "%s", big);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.len, 19 + 10 * 599);
    assert_int_equal(strlen((char *)w.buf), w.len);         /* NUL after the text */
    assert_memory_equal(w.buf, "tern_connections 3\n", 19); /* then the copies of big */
    assert_memory_equal(w.buf + 19, big, sizeof big - 1);
    assert_int_equal(w.buf[w.len - 1], 'x');
    tern_wbuf_printf(&w, "%s", "");
    assert_int_equal(w.len, 19 + 10 * 599);
    tern_wbuf_free(&w);
}

static void test_try_reserve_reset(void **state)
{
    (void)state;
    struct tern_wbuf w;
    tern_wbuf_init(&w);
    assert_int_equal(tern_wbuf_try_reserve(&w, 65536), TERN_OK);
    assert_int_equal(w.cap, 65536);
    assert_int_equal(w.len, 0);
    tern_wbuf_put_u32(&w, 7);
    /* Refused without latching: the buffer and later puts are unaffected. */
    assert_int_equal(tern_wbuf_try_reserve(&w, SIZE_MAX / 2), TERN_ETOOBIG);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.len, 4);
    tern_wbuf_put_u8(&w, 1);
    assert_int_equal(w.len, 5);
    /* The latching path, for contrast. */
    assert_null(tern_wbuf_append(&w, SIZE_MAX / 2));
    assert_int_equal(w.err, TERN_ETOOBIG);
    tern_wbuf_put_u8(&w, 1);
    assert_int_equal(w.len, 5);
    /* Reset: empty, error cleared, memory kept. */
    uint8_t *mem = w.buf;
    tern_wbuf_reset(&w);
    assert_int_equal(w.len, 0);
    assert_int_equal(w.err, 0);
    assert_ptr_equal(w.buf, mem);
    tern_wbuf_put_u8(&w, 5);
    uint8_t *out;
    size_t len;
    assert_int_equal(tern_wbuf_take(&w, &out, &len), TERN_OK);
    assert_int_equal(len, 1);
    assert_int_equal(out[0], 5);
    free(out);
    assert_null(w.buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append),
        cmocka_unit_test(test_printf),
        cmocka_unit_test(test_try_reserve_reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
