/* train_config_keys.c: unknown keys of a train config are errors; a key that is a verl or TRL name gets a
 * "did you mean" with the s2d key (docs/coming-from-verl.md has the table). */
#include "runtime/train_config.h"
#include "runtime/train_config_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- keys from verl and TRL configs: "did you mean" the s2d key (docs/coming-from-verl.md has the table) ---- */

typedef struct {
    const char *name;  /* a dotted suffix of the key path (verl) or a key name (TRL) */
    const char *s2d;   /* the s2d key; "stage." = under pipeline[N] */
    const char *from;  /* "verl" or "TRL" */
} foreign_key;

static const foreign_key FOREIGN[] = {
    {"actor_rollout_ref.actor.optim.lr", "stage.optimizer.lr", "verl"},
    {"actor_rollout_ref.actor.optim.weight_decay", "stage.optimizer.weight_decay", "verl"},
    {"actor_rollout_ref.actor.optim.lr_warmup_steps", "stage.optimizer.warmup", "verl"},
    {"actor_rollout_ref.actor.optim.warmup_style", "stage.optimizer.schedule", "verl"},
    {"actor_rollout_ref.actor.optim.min_lr_ratio", "stage.optimizer.min_lr", "verl"},
    {"actor_rollout_ref.actor.clip_ratio_low", "stage.grpo.clip_low", "verl"},
    {"actor_rollout_ref.actor.clip_ratio_high", "stage.grpo.clip_high", "verl"},
    {"actor_rollout_ref.actor.clip_ratio", "stage.grpo.clip_low and stage.grpo.clip_high", "verl"},
    {"actor_rollout_ref.actor.clip_ratio_c", "stage.grpo.dual_clip", "verl"},
    {"actor_rollout_ref.actor.use_kl_loss", "stage.grpo.kl_beta (> 0 turns the KL loss on)", "verl"},
    {"actor_rollout_ref.actor.kl_loss_coef", "stage.grpo.kl_beta", "verl"},
    {"actor_rollout_ref.actor.kl_loss_type", "stage.grpo.kl_estimator (low_var_kl is k3)", "verl"},
    {"actor_rollout_ref.actor.loss_agg_mode", "stage.grpo.agg", "verl"},
    {"actor_rollout_ref.actor.grad_clip", "stage.optimizer.clip", "verl"},
    {"actor_rollout_ref.actor.ppo_mini_batch_size", "stage.minibatches (a count of optimizer steps per step)", "verl"},
    {"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", "stage.micro_batches (a count, not a size)", "verl"},
    {"actor_rollout_ref.actor.ppo_epochs", "stage.minibatches", "verl"},
    {"actor_rollout_ref.rollout.n", "stage.group_size", "verl"},
    {"actor_rollout_ref.rollout.temperature", "stage.sampling.temperature", "verl"},
    {"actor_rollout_ref.rollout.top_p", "stage.sampling.top_p", "verl"},
    {"actor_rollout_ref.rollout.top_k", "stage.sampling.top_k", "verl"},
    {"actor_rollout_ref.rollout.response_length", "stage.sampling.max_new_tokens", "verl"},
    {"actor_rollout_ref.model.path", "models.<name>.path", "verl"},
    {"critic.model.path", "models.<name>.path", "verl"},
    {"data.train_batch_size", "stage.prompts_per_step", "verl"},
    {"data.max_response_length", "stage.sampling.max_new_tokens", "verl"},
    {"data.max_prompt_length", "no key: s2d does not truncate prompts (prompt + max_new_tokens must fit the model's "
                               "max_position_embeddings)", "verl"},
    {"data.train_files", "datasets.<name>.file", "verl"},
    {"data.val_files", "datasets.<name>.file with stage.eval.data", "verl"},
    {"data.prompt_key", "datasets.<name>.format", "verl"},
    {"algorithm.adv_estimator", "stage.algo (grpo)", "verl"},
    {"custom_reward_function.path", "stage.reward.command (a process speaking JSON lines)", "verl"},
    {"reward_model.reward_manager", "stage.reward.command (a process speaking JSON lines)", "verl"},
    {"algorithm.norm_adv_by_std_in_grpo", "stage.grpo.std (unbiased|population|none)", "verl"},
    {"algorithm.filter_groups.enable", "stage.grpo.dynamic_sampling.mode (refill)", "verl"},
    {"algorithm.filter_groups.max_num_gen_batches", "stage.grpo.dynamic_sampling.max_rounds", "verl"},
    {"algorithm.kl_ctrl.kl_coef", "stage.grpo.kl_beta", "verl"},
    {"algorithm.use_kl_in_reward", "stage.grpo.kl_beta (s2d puts the KL in the loss)", "verl"},
    {"trainer.total_training_steps", "stage.steps", "verl"},
    {"trainer.total_epochs", "stage.steps", "verl"},
    {"trainer.save_freq", "stage.checkpoint.every", "verl"},
    {"trainer.max_actor_ckpt_to_keep", "stage.checkpoint.keep_last", "verl"},
    {"trainer.test_freq", "stage.eval.every", "verl"},
    {"trainer.default_local_dir", "out", "verl"},
    {"trainer.experiment_name", "out", "verl"},
    {"trainer.n_gpus_per_node", "roles (generators, scorers, learners)", "verl"},
    {"trainer.nnodes", "roles (and the launcher's task count)", "verl"},
    {"trainer.logger", "logging.tensorboard (OUT/tensorboard; PNGs: s2d plot OUT)", "verl"},
    /* TRL GRPOConfig / TrainingArguments (one key name, usually at a stage or at the top) */
    {"learning_rate", "stage.optimizer.lr", "TRL"},
    {"lr_scheduler_type", "stage.optimizer.schedule", "TRL"},
    {"warmup_steps", "stage.optimizer.warmup", "TRL"},
    {"weight_decay", "stage.optimizer.weight_decay", "TRL"},
    {"adam_beta1", "stage.optimizer.beta1", "TRL"},
    {"adam_beta2", "stage.optimizer.beta2", "TRL"},
    {"adam_epsilon", "stage.optimizer.eps", "TRL"},
    {"max_grad_norm", "stage.optimizer.clip", "TRL"},
    {"num_generations", "stage.group_size", "TRL"},
    {"per_device_train_batch_size", "stage.prompts_per_step (prompts, each sampled group_size times)", "TRL"},
    {"gradient_accumulation_steps", "stage.micro_batches", "TRL"},
    {"num_iterations", "stage.minibatches", "TRL"},
    {"max_prompt_length", "no key: s2d does not truncate prompts (prompt + max_new_tokens must fit the model's "
                          "max_position_embeddings)", "TRL"},
    {"max_completion_length", "stage.sampling.max_new_tokens", "TRL"},
    {"beta", "stage.grpo.kl_beta", "TRL"},
    {"kl_coef", "stage.grpo.kl_beta", "TRL"},
    {"epsilon", "stage.grpo.clip_low", "TRL"},
    {"epsilon_high", "stage.grpo.clip_high", "TRL"},
    {"loss_type", "stage.grpo.agg", "TRL"},
    {"scale_rewards", "stage.grpo.std (unbiased|population|none)", "TRL"},
    {"mask_truncated_completions", "stage.grpo.mask_truncated", "TRL"},
    {"max_steps", "stage.steps", "TRL"},
    {"num_train_epochs", "stage.steps", "TRL"},
    {"save_steps", "stage.checkpoint.every", "TRL"},
    {"save_total_limit", "stage.checkpoint.keep_last", "TRL"},
    {"eval_steps", "stage.eval.every", "TRL"},
    {"output_dir", "out", "TRL"},
    {"model_name_or_path", "models.<name>.path", "TRL"},
    {"lmbda", "stage.opd.lambda", "TRL"},
    {"report_to", "logging.tensorboard (OUT/tensorboard; PNGs: s2d plot OUT)", "TRL"},
    {"reward_funcs", "stage.reward.command (a process speaking JSON lines)", "TRL"},
};

/* The first key no getter read (same order as cfg_check_unused), with the dotted path down to its first leaf. */
static const cfg_node *first_unused(const cfg_node *node, const char **key, const cfg_node **parent, int *slot) {
    if (node->kind == CFG_SCALAR) return NULL;
    for (int i = 0; i < node->n; i++) {
        const cfg_node *c = node->items[i];
        if (!c->used) {
            if (node->kind != CFG_MAP) return NULL;
            *key = node->keys[i], *parent = node, *slot = i;
            return c;
        }
        const cfg_node *r = first_unused(c, key, parent, slot);
        if (r) return r;
    }
    return NULL;
}

static bool ends_with_path(const char *path, const char *suffix) {
    size_t a = strlen(path), b = strlen(suffix);
    return a >= b && strcmp(path + a - b, suffix) == 0 && (a == b || path[a - b - 1] == '.');
}

/* cfg_check_unused, with a hint naming the s2d key when the unknown key is a verl or TRL name. */
bool tc_check_unknown_keys(cfg_node *root, s2d_err *err) {
    if (cfg_check_unused(root, err)) return true;
    const char *key = NULL;
    const cfg_node *parent = NULL;
    int slot = 0;
    const cfg_node *c = first_unused(root, &key, &parent, &slot);
    if (!c) return false;
    const cfg_node *leaf = c; /* a nested verl block: follow its first keys down */
    while (leaf->kind == CFG_MAP && leaf->n > 0) leaf = leaf->items[0];
    const char *lp = cfg_path(leaf);
    const foreign_key *hit = NULL;
    for (size_t i = 0; i < sizeof FOREIGN / sizeof *FOREIGN && !hit; i++)
        if (strchr(FOREIGN[i].name, '.') && ends_with_path(lp, FOREIGN[i].name)) hit = &FOREIGN[i];
    for (size_t i = 0; i < sizeof FOREIGN / sizeof *FOREIGN && !hit; i++)
        if (!strchr(FOREIGN[i].name, '.') && strcmp(key, FOREIGN[i].name) == 0) hit = &FOREIGN[i];
    if (!hit) return false;
    /* the stage the key sits in, when it does */
    char stage[64] = "pipeline[N]";
    int idx;
    if (sscanf(c->path, "pipeline[%d]", &idx) == 1) snprintf(stage, sizeof stage, "pipeline[%d]", idx);
    char s2d[512] = "", where[600];
    const char *t = hit->s2d;
    while (*t) { /* "stage." -> "pipeline[i]." */
        const char *st = strstr(t, "stage.");
        size_t len = st ? (size_t)(st - t) : strlen(t), at = strlen(s2d);
        snprintf(s2d + at, sizeof s2d - at, "%.*s%s%s", (int)len, t, st ? stage : "", st ? "." : "");
        t += len + (st ? 6 : 0);
    }
    if (parent->key_line[slot] > 0) snprintf(where, sizeof where, "%s:%d:%d", c->origin, parent->key_line[slot],
                                             parent->key_col[slot]);
    else cfg_where(c, where, sizeof where);
    if (strncmp(s2d, "no key: ", 8) == 0)
        return err_set(err, "%s: unknown key '%s' at %s ('%s' is %s's name; s2d has no such key: %s; "
                            "docs/coming-from-verl.md maps verl and TRL keys to s2d's)",
                       where, key, leaf == c ? c->path : lp, hit->name, hit->from, s2d + 8);
    return err_set(err, "%s: unknown key '%s' at %s (did you mean %s? '%s' is %s's name; docs/coming-from-verl.md "
                        "maps verl and TRL keys to s2d's)",
                   where, key, leaf == c ? c->path : lp, s2d, hit->name, hit->from);
}

