/* The stop rules (planner/stop.h) against hand-computed cases. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "planner/stop.h"

static void test_confidence(void **state)
{
    (void)state;
    const float p[3] = {0.2f, 0.7f, 0.1f};
    assert_float_equal(stop_confidence(p, 3), 0.7f, 1e-7);
    /* Fires at max p >= T: exactly at 0.7 (as a float), not above it. */
    assert_int_equal(stop_fires(STOP_KIND_CONFIDENCE, (double)0.7f, p, 3, 0), 1);
    assert_int_equal(stop_fires(STOP_KIND_CONFIDENCE, 0.71, p, 3, 0), 0);
    assert_int_equal(stop_fires(STOP_KIND_CONFIDENCE, 0.0, p, 3, 0), 1);
}

static void test_entropy(void **state)
{
    (void)state;
    const float uniform[4] = {0.25f, 0.25f, 0.25f, 0.25f}, onehot[4] = {0, 0, 1, 0};
    const float half[4] = {0.5f, 0.5f, 0, 0}, two[2] = {0.9f, 0.1f};
    assert_float_equal(stop_entropy(uniform, 4), 1.0, 1e-7);
    assert_float_equal(stop_entropy(onehot, 4), 0.0, 1e-12);
    /* ln 2 / ln 4 = 1/2; -(0.9 ln 0.9 + 0.1 ln 0.1) / ln 2 = 0.468995593589... */
    assert_float_equal(stop_entropy(half, 4), 0.5, 1e-7);
    assert_float_equal(stop_entropy(two, 2), 0.4689955935892812, 1e-6);
    /* Fires at H <= T. */
    assert_int_equal(stop_fires(STOP_KIND_ENTROPY, 0.5, half, 4, 0), 1);
    assert_int_equal(stop_fires(STOP_KIND_ENTROPY, 0.49, half, 4, 0), 0);
    assert_int_equal(stop_fires(STOP_KIND_ENTROPY, 0.47, two, 2, 0), 1);
    assert_int_equal(stop_fires(STOP_KIND_ENTROPY, 0.46, two, 2, 0), 0);
    assert_int_equal(stop_fires(STOP_KIND_ENTROPY, 1.0, uniform, 4, 0), 1);
    assert_int_equal(stop_fires(STOP_KIND_ENTROPY, 0.0, onehot, 4, 0), 1);
    /* One class: nothing to be unsure about. */
    assert_float_equal(stop_entropy(onehot + 2, 1), 0.0, 1e-12);
}

/* einet:A reads the predicted probability of being right, not the softmax. */
static void test_einet(void **state)
{
    (void)state;
    const float sure[2] = {0.999f, 0.001f}, unsure[2] = {0.5f, 0.5f};
    assert_int_equal(stop_fires(STOP_KIND_EINET, 0.97, unsure, 2, 0.97), 1);
    assert_int_equal(stop_fires(STOP_KIND_EINET, 0.97, sure, 2, 0.969), 0);
    assert_int_equal(stop_fires(STOP_KIND_EINET, 1.0, sure, 2, 0.999), 0);
    /* Its branch plan: run the branch when right >= A - margin. */
    assert_int_equal(stop_einet_branch(0.97, 0.97 - STOP_EINET_MARGIN), 1);
    assert_int_equal(stop_einet_branch(0.97, 0.97 - STOP_EINET_MARGIN - 1e-9), 0);
    assert_int_equal(stop_einet_branch(0.5, 0.0), 0);
    assert_int_equal(stop_einet_branch(0.05, 0.0), 1);
}

static void test_no_rule(void **state)
{
    (void)state;
    const float onehot[2] = {1, 0};
    assert_int_equal(stop_fires(STOP_KIND_NONE, 0.0, onehot, 2, 1.0), 0);
    assert_int_equal(stop_fires(9, 0.0, onehot, 2, 1.0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_confidence),
        cmocka_unit_test(test_entropy),
        cmocka_unit_test(test_einet),
        cmocka_unit_test(test_no_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
