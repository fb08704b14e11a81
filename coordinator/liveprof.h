/* liveprof: the live ET-profile and the plan new requests start with. Block times come
 * from the nodes' reports (each node times the blocks it runs, as its machine takes them);
 * until a node has reported, from the coordinator's own timing of every block at start-up.
 * The link after each tier's last block is L_k = latency + feature-map bytes / bandwidth
 * from the sending node's measurements, and r_k is the latency from block k's node to the
 * coordinator (DESIGN.md, "ET-profile"). Each rebuild is a new version, pushed to the nodes
 * as a ProfileUpdate; the initial plan is searched again on it. */
#ifndef COORDINATOR_LIVEPROF_H
#define COORDINATOR_LIVEPROF_H

#include <stdint.h>

#include "common/ei.h"
#include "coordinator/cluster.h"
#include "nn/model.h"
#include "runtime/scores.h"
#include "proto/messages.pb.h"
#include "wire/conf.h"

typedef struct liveprof liveprof_t;

/* Makes the first profile (version 1) and plan of model m (prepared for inference,
 * max_batch >= 1), with the search and interruption distribution of conf and the exit
 * scores s (copied; a predictor in it is borrowed, not owned). The block times until the
 * nodes report are those of the ET-profile et when given (its n must be m's), else the
 * coordinator times every block itself. Caller owns the result; NULL with err set. */
liveprof_t *liveprof_new(nn_model_t *m, const conf_coord_t *conf, const scores_t *s,
                         const planner_profile_t *et, ei_err_t *err);
void liveprof_destroy(liveprof_t **self_p);

/* Rebuilds the profile from what the cluster has measured and replans: a new version. On a
 * profile the planner refuses, the previous one stays and a negative code is returned. */
int liveprof_rebuild(liveprof_t *self, const cluster_t *c, ei_err_t *err) EI_CHECK;

/* Replaces the exit scores (copied, a predictor borrowed); the next rebuild plans with
 * them. */
void liveprof_set_scores(liveprof_t *self, const scores_t *s);

/* Exit `exit`'s result, from the node at pipeline index pos, arrived offset_ms after its
 * request's receipt less the node's elapsed time: the dispatch time plus that result's
 * delay. The next rebuild takes the means since the last one: the dispatch d0 (request
 * receipt to the device's start) is the device's mean offset less its heartbeat latency,
 * and r_k = (exit k's mean offset) - d0, so a_k = d0 + e_k + r_k is the coordinator's
 * own clock of the arrivals. */
void liveprof_note_offset(liveprof_t *self, int pos, int exit, double offset_ms);
double liveprof_dispatch_ms(const liveprof_t *self);

/* The initial plan for a request planned under its own interruption distribution (the
 * config's plan when dist is the config's): n bits into plan. Cached per profile version
 * and distribution. 0 or a planner error. */
int liveprof_plan_for(liveprof_t *self, const planner_dist_t *dist, uint8_t *plan,
                      ei_err_t *err) EI_CHECK;

/* The profile as a ProfileUpdate body (with dispatch_ms and horizon_ms, which the nodes
 * ignore). */
void liveprof_fill(const liveprof_t *self, einet_ProfileUpdate *out);

uint64_t liveprof_version(const liveprof_t *self);
/* The plan for new requests: n bits. */
const uint8_t *liveprof_plan(const liveprof_t *self);
int liveprof_blocks(const liveprof_t *self);
/* Horizon H of the current profile on the coordinator's clock (ms; d0 included) and the
 * expected score of the current plan. */
double liveprof_horizon_ms(const liveprof_t *self);
double liveprof_expectation(const liveprof_t *self);

#endif
