/* reward_cmd.h: a custom reward computed by a user command (`reward: {command: "python3 my_reward.py"}`).
 *
 * The command is started once (core/subproc.h: /bin/sh -c, its own process group, killed and reaped on every
 * exit path of s2d) and kept for many records. Protocol, JSON lines: for each record s2d writes
 *   {"id": "<record id>", "prompt": "<problem text>", "response": "<decoded completion>", "answer": "<reference>"}
 * and the command answers with one line
 *   {"reward": <finite number>, "<name>": <number or bool>, ...}
 * Extra numeric (or boolean: 1/0) fields are summed per step and reported as their mean, `reward/<name>`;
 * strings, null, arrays and objects among the extras are ignored; "id" is never an extra. A reply that is not
 * JSON, lacks a numeric "reward", holds a non-finite number (NaN, Infinity), comes later than timeout_s, or a
 * command that exits or is killed, is an error naming the command, the record and what happened. The command
 * must read records until end-of-file on stdin and then exit.
 *
 * No allocation per record: the request and reply buffers are sized when started (a longer request grows the
 * request buffer once), and replies are parsed by cJSON out of a fixed arena. */
#pragma once
#include <stdbool.h>
#include <stdio.h>

#include "core/common.h"

enum { REWARD_MAX_EXTRAS = 32, REWARD_NAME_MAX = 48 };

typedef struct reward_cmd reward_cmd;

/* Starts the command. timeout_s: the longest wait for one reply (and for it to take one request). */
bool reward_cmd_start(const char *command, double timeout_s, reward_cmd **out, s2d_err *err);
const char *reward_cmd_command(const reward_cmd *rc);
/* One record: writes it, reads the reply, *reward = its "reward", adds its extras to the step sums.
 * what names the record in errors (e.g. "datasets.train record 17, sample 2"). */
bool reward_cmd_score(reward_cmd *rc, const char *id, const char *what, const char *prompt, const char *response,
                      const char *answer, double *reward, s2d_err *err);
/* Clears the per-step sums of the extras. */
void reward_cmd_step_reset(reward_cmd *rc);
/* Extras seen in this step: count, and the i-th name and mean. */
int reward_cmd_n_extras(const reward_cmd *rc);
bool reward_cmd_extra(const reward_cmd *rc, int i, const char **name, double *mean);
/* The extras seen in this step, at most cap (REWARD_MAX_EXTRAS holds them all): names [n] and means [n];
 * returns n. For metrics.h5 (io/h5io.h metrics_log_append_extras). */
int reward_cmd_extras(const reward_cmd *rc, const char **names, double *means, int cap);
/* `, "reward/<name>": mean` for every extra seen in this step (a JSON-object fragment). */
void reward_cmd_write_metrics(const reward_cmd *rc, FILE *f);
/* Stops (stdin closed, a short grace, then SIGKILL) and reaps the command; frees rc. NULL is fine. */
void reward_cmd_close(reward_cmd *rc);
