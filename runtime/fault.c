/* Fault injection state and routing (see fault.h). */
#include <stdio.h>
#include <string.h>

#include "runtime/fault.h"

void fault_init(fault_state_t *f, uint64_t seed)
{
    memset(f, 0, sizeof *f);
    ei_rng_seed(&f->rng, seed);
}

void fault_apply(fault_state_t *f, const einet_Fault *cmd, uint64_t now_us)
{
    if (cmd->clear) {
        f->down_until_us = 0;
        f->delay_ms = 0;
        f->loss_pct = 0;
        fault_release(f);
    }
    if (cmd->down_ms)
        f->down_until_us = now_us + (uint64_t)cmd->down_ms * 1000;
    if (cmd->delay_ms)
        f->delay_ms = cmd->delay_ms;
    if (cmd->loss_pct > 0)
        f->loss_pct = cmd->loss_pct > 100 ? 100 : cmd->loss_pct;
}

/* Lateness from lost transmissions: after f losses, 200 (2^f - 1) ms. */
static uint64_t loss_delay(fault_state_t *f)
{
    if (f->loss_pct <= 0)
        return 0;
    int lost = 0;
    while (lost <= FAULT_MAX_RETRIES && ei_rng_uniform(&f->rng) * 100.0 < f->loss_pct)
        lost++;
    f->lost_transmissions += (uint64_t)lost;
    if (lost > FAULT_MAX_RETRIES)
        return FAULT_NEVER;
    return (uint64_t)FAULT_RTO_US * ((1ull << lost) - 1);
}

uint64_t fault_deliver_at(fault_state_t *f, int dir, uint64_t now_us)
{
    uint64_t at = now_us;
    if (f->down_until_us > now_us)
        at = f->down_until_us;
    uint64_t late = loss_delay(f);
    at = late == FAULT_NEVER ? FAULT_NEVER : at + late;
    if (at != FAULT_NEVER && f->delay_ms)
        at += (uint64_t)f->delay_ms * 1000;
    if (at < f->last_at[dir & 1])
        at = f->last_at[dir & 1]; /* in order: behind the previous one */
    f->last_at[dir & 1] = at;
    f->held += at > now_us;
    return at;
}

void fault_lost(fault_state_t *f)
{
    f->last_at[0] = f->last_at[1] = 0;
}

void fault_release(fault_state_t *f)
{
    f->last_at[0] = f->last_at[1] = 0;
}

int fault_active(const fault_state_t *f, uint64_t now_us)
{
    return (f->down_until_us && now_us < f->down_until_us) || f->loss_pct > 0 || f->delay_ms;
}

void fault_describe(const fault_state_t *f, uint64_t now_us, char *buf, size_t cap)
{
    size_t k = 0;
    buf[0] = 0;
    if (f->down_until_us && now_us < f->down_until_us)
        k += (size_t)snprintf(buf + k, cap - k, "down %llu ms more",
                              (unsigned long long)((f->down_until_us - now_us) / 1000));
    if (f->delay_ms && k < cap)
        k += (size_t)snprintf(buf + k, cap - k, "%sdelay %u ms", k ? ", " : "",
                              (unsigned)f->delay_ms);
    if (f->loss_pct > 0 && k < cap)
        k += (size_t)snprintf(buf + k, cap - k, "%sloss %g%%", k ? ", " : "", (double)f->loss_pct);
    if (k == 0)
        snprintf(buf, cap, "none");
}

int fault_target(const einet_Fault *cmd, const int *tiers, int n_tiers, int *tier, ei_err_t *err)
{
    int has_link = cmd->link != einet_Link_LINK_NONE, has_kill = cmd->kill != einet_Tier_TIER_NONE;
    if (has_link == has_kill)
        return ei_err_set(err, EI_E_FORMAT, "fault: name either a link or a tier to kill");
    if (has_kill) {
        for (int i = 0; i < n_tiers; i++)
            if (tiers[i] == (int)cmd->kill) {
                *tier = tiers[i];
                return 0;
            }
        return ei_err_set(err, EI_E_RANGE, "fault.kill: tier %d is not in this pipeline",
                          (int)cmd->kill);
    }
    /* The link leaving pipeline index i is link i + 1; its sending end acts. */
    int i = (int)cmd->link - 1;
    if (i < 0 || i + 1 >= n_tiers)
        return ei_err_set(err, EI_E_RANGE, "fault.link: link %d is not in this pipeline of %d tiers",
                          (int)cmd->link, n_tiers);
    *tier = tiers[i];
    return 0;
}
