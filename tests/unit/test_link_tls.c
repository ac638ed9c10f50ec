/* cluster/link_tls.c: the node id a certificate's CN names, and the credentials
 * from cluster_tls's files (the handshakes themselves run against real nodes in
 * tests/integration/test_cluster_tls.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../cluster/link_tls.h"
#include "tern/error.h"

static void test_node_of(void **state)
{
    (void)state;
    assert_int_equal(tern_link_tls_node_of("node-1"), 1);
    assert_int_equal(tern_link_tls_node_of("node-65535"), 65535);
    assert_int_equal(tern_link_tls_node_of("node-4294967295"), 4294967295u);
    /* One spelling per id, nothing around it. */
    const char *bad[] = {"node-0",  "node-01", "node-",   "node-1x",         "node--1",
                         "node-+1", "Node-1",  "xnode-1", "node-4294967296", "node 1",
                         "",        "node-1 ", "1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (tern_link_tls_node_of(bad[i]) != 0)
            fail_msg("\"%s\" named node %u", bad[i], tern_link_tls_node_of(bad[i]));
}

static void test_creds_need_three_files(void **state)
{
    (void)state;
    struct tern_link_creds c = {0};
    char errmsg[TERN_ERRMSG_SIZE];
    struct tern_link_tls_files f = {.cert_file = "a.pem", .key_file = "a.key"};
    assert_int_equal(tern_link_creds_load(&c, &f, errmsg), TERN_EINVAL);
    assert_string_equal(errmsg, "cluster_tls.ca_file: required");
    f.ca_file = "/nonexistent/ca.pem";
    assert_int_equal(tern_link_creds_load(&c, &f, errmsg), TERN_EINVAL);
    assert_non_null(strstr(errmsg, "cluster_tls.cert_file: cannot use \"a.pem\""));
    assert_null(c.server);
    assert_null(c.client);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node_of),
        cmocka_unit_test(test_creds_need_three_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
