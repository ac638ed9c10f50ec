/* The HOST:PORT parser (storage/base/addr.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tern/addr.h"
#include "tern/error.h"

static void expect_split(const char *s, const char *host, int port)
{
    char h[64];
    uint16_t p = 0;
    int rc = tern_addr_split(s, h, sizeof h, &p);
    if (rc != TERN_OK)
        fail_msg("split \"%s\": rc %d", s, rc);
    assert_string_equal(h, host);
    assert_int_equal(p, port);
}

static void expect_split_fails(const char *s)
{
    char h[64];
    uint16_t p = 0;
    if (tern_addr_split(s, h, sizeof h, &p) != TERN_EINVAL)
        fail_msg("split \"%s\" should fail", s);
}

static void test_split_hostport(void **state)
{
    (void)state;
    expect_split("127.0.0.1:1883", "127.0.0.1", 1883);
    expect_split("localhost:0", "localhost", 0);
    expect_split("0.0.0.0:65535", "0.0.0.0", 65535);
    expect_split("[::1]:1883", "::1", 1883);
    expect_split("[::]:8883", "::", 8883);
    expect_split("[fe80::1%eth0]:1", "fe80::1%eth0", 1);
    expect_split("broker.example.com:01883", "broker.example.com", 1883);

    const char *bad[] = {"",          "1883",      ":1883",     "host:",   "host:65536",
                         "host:-1",   "host:+1",   "host:1 ",   "host:1x", "host:123456",
                         "::1:1883",  "[::1]",     "[::1]1883", "[]:1883", "[::1:1883",
                         "::1]:1883", "h[1]:1883", " host:1",   "ho st:1", "host:999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_split_fails(bad[i]);

    /* The host must fit the caller's buffer, NUL included. */
    char h[4];
    uint16_t p;
    assert_int_equal(tern_addr_split("abc:1", h, sizeof h, &p), TERN_OK);
    assert_int_equal(tern_addr_split("abcd:1", h, sizeof h, &p), TERN_EINVAL);
    assert_int_equal(tern_addr_split(NULL, h, sizeof h, &p), TERN_EINVAL);
}

static void test_port_ok(void **state)
{
    (void)state;
    assert_true(tern_addr_port_ok("127.0.0.1:1", 64));
    assert_true(tern_addr_port_ok("127.0.0.1:65535", 64));
    assert_true(tern_addr_port_ok("[::1]:1883", 64));
    /* Port 0 means "any" to a listener only; atoi() once made 70000 into 4464. */
    const char *bad[] = {"127.0.0.1:0",   "127.0.0.1:70000", "127.0.0.1:65536",
                         "127.0.0.1:12x", "127.0.0.1:",      ":1883",
                         "127.0.0.1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (tern_addr_port_ok(bad[i], 64))
            fail_msg("\"%s\" accepted", bad[i]);
    assert_false(tern_addr_port_ok(NULL, 64));
    assert_true(tern_addr_port_ok("abc:1", 3));
    assert_false(tern_addr_port_ok("abcd:1", 3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_hostport),
        cmocka_unit_test(test_port_ok),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
