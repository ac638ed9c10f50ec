/* acl-check-bench: what one ACL read check costs (tern_acl_check on a topic
 * name), the price of checking a delivery (issue 16). Prints ns per check for a
 * few rule sets; no assertion on the figures.
 *   build/acl-check-bench [ITERATIONS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tern/auth.h"
#include "tern/error.h"

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void run(const char *name, const char *text, const char *user, const char *id,
                const char *topic, long iters)
{
    struct tern_acl *a = NULL;
    char err[TERN_ERRMSG_SIZE] = "";
    if (tern_acl_parse(text, strlen(text), &a, err) != TERN_OK) {
        fprintf(stderr, "%s: %s\n", name, err);
        exit(1);
    }
    size_t ul = user ? strlen(user) : 0, il = strlen(id), tl = strlen(topic);
    long allowed = 0;
    double t0 = now_ns();
    for (long i = 0; i < iters; i++)
        allowed +=
            tern_acl_check(a, (const uint8_t *)user, ul, (const uint8_t *)id, il,
                           (const uint8_t *)topic, tl, TERN_ACL_READ) != TERN_ACL_NO;
    double ns = (now_ns() - t0) / (double)iters;
    printf("%-44s %7.1f ns/check (%s)\n", name, ns, allowed ? "allowed" : "refused");
    tern_acl_free(a);
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 2000000;
    const char *bench = "topic readwrite bench/#\n"
                        "topic deny bench/secret/#\n"
                        "topic read $SYS/#\n"
                        "pattern read devices/%c/#\n"
                        "pattern write devices/%c/out\n"
                        "pattern read users/%u/in\n";
    run("anonymous, 3 rules + 3 patterns", bench, NULL, "client-1", "bench/t/0", iters);
    run("anonymous, denied topic", bench, NULL, "client-1", "bench/secret/x", iters);
    const char *users = "user alice\n"
                        "topic readwrite home/#\n"
                        "topic deny home/secret\n"
                        "user bob\n"
                        "topic read #\n"
                        "pattern readwrite devices/%c/#\n"
                        "pattern read users/%u/in\n";
    run("user, 2 rules + 2 patterns, own topic", users, "alice", "c1", "home/kitchen/t",
        iters);
    run("user, pattern topic (%c expanded)", users, "alice", "dev7", "devices/dev7/t",
        iters);
    return 0;
}
