/* Tests of common/: error records and the seeded RNG. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "common/ei.h"

static void test_err_set_and_prefix(void **state)
{
    (void)state;
    ei_err_t err = {0};
    assert_int_equal(ei_err_set(&err, EI_E_FORMAT, "at line %d: bad", 12), EI_E_FORMAT);
    assert_string_equal(err.msg, "at line 12: bad");
    ei_err_prefix(&err, "%s: ", "a.ini");
    assert_string_equal(err.msg, "a.ini: at line 12: bad");
    assert_string_equal(ei_strerror(EI_E_SHAPE), "shape mismatch");
    assert_string_equal(ei_strerror(-999), "unknown error");
    assert_int_equal(ei_err_set(NULL, EI_E_IO, "ignored"), EI_E_IO);
}

static void test_rng_reproducible_and_uniform(void **state)
{
    (void)state;
    ei_rng_t a, b;
    ei_rng_seed(&a, 42);
    ei_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++)
        assert_true(ei_rng_next(&a) == ei_rng_next(&b));
    int hist[10] = {0};
    for (int i = 0; i < 100000; i++)
        hist[ei_rng_below(&a, 10)]++;
    for (int i = 0; i < 10; i++)
        assert_in_range(hist[i], 9500, 10500);
    double s = 0, s2 = 0;
    for (int i = 0; i < 100000; i++) {
        double z = ei_rng_normal(&a);
        s += z;
        s2 += z * z;
    }
    assert_true(s / 100000 > -0.02 && s / 100000 < 0.02);
    assert_true(s2 / 100000 > 0.97 && s2 / 100000 < 1.03);
}

static void test_shuffle_is_permutation(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 7);
    int a[100], seen[100] = {0};
    for (int i = 0; i < 100; i++)
        a[i] = i;
    ei_rng_shuffle(&r, a, 100);
    int moved = 0;
    for (int i = 0; i < 100; i++) {
        seen[a[i]]++;
        moved += a[i] != i;
    }
    for (int i = 0; i < 100; i++)
        assert_int_equal(seen[i], 1);
    assert_true(moved > 80);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_set_and_prefix),
        cmocka_unit_test(test_rng_reproducible_and_uniform),
        cmocka_unit_test(test_shuffle_is_permutation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
