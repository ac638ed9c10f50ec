/* Tests of storage/base/log.c: line format, level filtering, one line per call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tern/log.h"

static char captured[4096];

/* Runs fn with stderr sent to a temporary file, then reads the file back. */
static void capture(void (*fn)(void))
{
    char path[] = "/tmp/tern_test_log_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    fflush(stderr);
    dup2(fd, STDERR_FILENO);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, captured, sizeof captured - 1);
    captured[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
}

static int evaluated;

static int count(void)
{
    return ++evaluated;
}

static void log_some(void)
{
    tern_log_set_level(TERN_LOG_INFO);
    TERN_LOGE("e %d", 1);
    TERN_LOGW("w");
    TERN_LOGI("i %s", "x");
    TERN_LOGD("d %d", count()); /* disabled: count() must not run */
}

static void test_levels_and_format(void **state)
{
    (void)state;
    evaluated = 0;
    capture(log_some);
    assert_int_equal(evaluated, 0);

    /* 2024-05-01T12:34:56.789Z ERROR e 1 */
    const char *line = captured;
    assert_true(strlen(line) > 25);
    assert_int_equal(line[4], '-');
    assert_int_equal(line[10], 'T');
    assert_int_equal(line[19], '.');
    assert_int_equal(line[23], 'Z');
    assert_memory_equal(line + 24, " ERROR e 1\n", 11);
    assert_non_null(strstr(captured, "Z WARN w\n"));
    assert_non_null(strstr(captured, "Z INFO i x\n"));
    assert_null(strstr(captured, "DEBUG"));
}

static void log_newlines(void)
{
    tern_log_set_level(TERN_LOG_DEBUG);
    TERN_LOGD("a\nb\r\n");
}

static void test_one_line(void **state)
{
    (void)state;
    capture(log_newlines);
    assert_non_null(strstr(captured, " DEBUG a b  \n"));
    assert_int_equal(strchr(captured, '\n') - captured, (long)strlen(captured) - 1);
}

static void log_long(void)
{
    static char big[5000];
    memset(big, 'x', sizeof big - 1);
    tern_log(TERN_LOG_ERROR, "%s", big);
}

static void test_long_message_is_cut(void **state)
{
    (void)state;
    capture(log_long);
    size_t n = strlen(captured);
    assert_true(n < 2048);
    assert_int_equal(captured[n - 1], '\n');
}

static void test_level_clamped(void **state)
{
    (void)state;
    tern_log_set_level(99);
    assert_true(tern_log_enabled(TERN_LOG_DEBUG));
    tern_log_set_level(-5);
    assert_true(tern_log_enabled(TERN_LOG_ERROR));
    assert_false(tern_log_enabled(TERN_LOG_WARN));
    tern_log_set_level(TERN_LOG_INFO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels_and_format),
        cmocka_unit_test(test_one_line),
        cmocka_unit_test(test_long_message_is_cut),
        cmocka_unit_test(test_level_clamped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
