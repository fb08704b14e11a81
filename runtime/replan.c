/* Replanning with planner offsets (see replan.h). */
#include <string.h>

#include "runtime/replan.h"
#include "wire/conf.h"

#define REPLAN_HYBRID_M 4

void replan_search_init(planner_search_t *s, int conf_search, long n_random, uint64_t seed)
{
    planner_search_init(s);
    switch (conf_search) {
    case CONF_SEARCH_ENUM:
        s->kind = PLANNER_SEARCH_ENUM;
        break;
    case CONF_SEARCH_GREEDY:
        s->kind = PLANNER_SEARCH_GREEDY;
        break;
    case CONF_SEARCH_RANDOM:
        s->kind = PLANNER_SEARCH_RANDOM;
        break;
    case CONF_SEARCH_EXACT:
        s->kind = PLANNER_SEARCH_EXACT;
        break;
    default:
        s->kind = PLANNER_SEARCH_HYBRID;
        break;
    }
    s->m = REPLAN_HYBRID_M;
    s->n_random = n_random > 0 ? n_random : 100;
    s->seed = seed;
}

/* The search adapted to `free_bits` free bits: hybrid's m at most the free bits, enum
 * falls back to exact beyond its limit. */
static planner_search_t adapt(const planner_search_t *s, int free_bits)
{
    planner_search_t a = *s;
    if (a.m > free_bits)
        a.m = free_bits;
    if (a.kind == PLANNER_SEARCH_ENUM && free_bits > PLANNER_ENUM_MAX_BITS)
        a.kind = PLANNER_SEARCH_EXACT;
    return a;
}

static void fill_offset(planner_offset_t *off, const double *scores, const uint8_t *plan, int x,
                        double t0_ms, const replan_exit_t *seen, int nseen)
{
    planner_offset_init(off);
    off->x = x;
    off->t0_ms = t0_ms;
    for (int k = 0; k < x; k++)
        off->spent[k] = plan[k] ? 1 : 0;
    int in_effect = 0; /* the deepest exit that has arrived by t0 */
    for (int i = 0; i < nseen; i++)
        if (seen[i].arrive_ms <= t0_ms && seen[i].exit > in_effect)
            in_effect = seen[i].exit;
    off->c0 = in_effect ? scores[in_effect - 1] : 0;
    for (int i = 0; i < nseen && off->n_pending < PLANNER_MAX_EXITS; i++) {
        if (seen[i].exit <= in_effect || seen[i].arrive_ms <= t0_ms)
            continue;
        off->pending_ms[off->n_pending] = seen[i].arrive_ms;
        off->pending_score[off->n_pending++] = scores[seen[i].exit - 1];
    }
}

int replan_after(planner_t *p, const planner_search_t *s, const double *scores, uint8_t *plan,
                 int x, double t0_ms, const replan_exit_t *seen, int nseen, ei_err_t *err)
{
    int n = planner_n(p);
    if (x < 1 || x >= n || !(t0_ms >= 0) || t0_ms >= planner_horizon(p))
        return 0;
    planner_offset_t off;
    fill_offset(&off, scores, plan, x, t0_ms, seen, nseen);
    planner_search_t a = adapt(s, n - x);
    planner_result_t res;
    int rc = planner_offset_check(&off, n, err);
    if (rc == 0)
        rc = planner_search(p, &a, scores, &off, &res, err);
    if (rc < 0)
        return rc;
    memcpy(plan + x, res.plan + x, (size_t)(n - x));
    return 1;
}

int replan_initial(planner_t *p, const planner_search_t *s, const double *scores, uint8_t *plan,
                   ei_err_t *err)
{
    int n = planner_n(p);
    planner_search_t a = adapt(s, n);
    planner_result_t res;
    int rc = planner_search(p, &a, scores, NULL, &res, err);
    if (rc < 0)
        return rc;
    memcpy(plan, res.plan, (size_t)n);
    return 1;
}
