/* model_arch.c: the architecture descriptors and the tensor-spec table (model.h). Every tensor of every
 * supported architecture is a row of SPECS: its HF name, kind, shape in terms of the config, the descriptor
 * flag it depends on and its field in the views. model.c builds the tensor table, the views, loading and
 * saving from these rows alone. */
#include <stddef.h>
#include <string.h>

#include "model/model.h"
#include "model/model_spec.h"

static const char *const QWEN_STOPS[] = {"<|im_end|>", "<|endoftext|>", NULL};
static const char *const LLAMA_STOPS[] = {"<|end_of_text|>", "<|eom_id|>", "<|eot_id|>", NULL};

static const model_arch_desc ARCHS[] = {
    {.arch = MODEL_QWEN3, .model_type = "qwen3", .hf_architecture = "Qwen3ForCausalLM", .qk_norm = true,
     .writes_sliding_window_key = true, .chat_template = "qwen3", .stop_tokens = QWEN_STOPS},
    {.arch = MODEL_QWEN2, .model_type = "qwen2", .hf_architecture = "Qwen2ForCausalLM", .qkv_bias = true,
     .writes_sliding_window_key = true, .chat_template = "qwen3", .stop_tokens = QWEN_STOPS},
    {.arch = MODEL_LLAMA, .model_type = "llama", .hf_architecture = "LlamaForCausalLM", .writes_mlp_bias_key = true,
     .chat_template = "llama3", .stop_tokens = LLAMA_STOPS},
};

const model_arch_desc *model_arch_of(model_arch arch) {
    for (size_t i = 0; i < sizeof ARCHS / sizeof *ARCHS; i++)
        if (ARCHS[i].arch == arch) return &ARCHS[i];
    return &ARCHS[0];
}

const model_arch_desc *model_arch_find(const char *model_type) {
    for (size_t i = 0; i < sizeof ARCHS / sizeof *ARCHS; i++)
        if (strcmp(ARCHS[i].model_type, model_type) == 0) return &ARCHS[i];
    return NULL;
}

const char *model_arch_names(void) { return "\"qwen3\", \"qwen2\", \"llama\""; }

#define LAYER(field) offsetof(model_layer_view, field)
#define GLOBAL(field) offsetof(model_view, field)

/* In flat-buffer order (the order fixes the parameter offsets, so it is kept as it was for Qwen3 and Llama;
 * Qwen2's biases follow their weights). */
const model_tensor_spec MODEL_SPECS[] = {
    {"model.embed_tokens.weight", false, TENSOR_EMBEDDING, DIM_V, DIM_H, WHEN_ALWAYS, GLOBAL(embed)},
    {"model.layers.%d.input_layernorm.weight", true, TENSOR_NORM, DIM_H, DIM_NONE, WHEN_ALWAYS, LAYER(attn_norm)},
    {"model.layers.%d.self_attn.q_proj.weight", true, TENSOR_LINEAR, DIM_QD, DIM_H, WHEN_ALWAYS, LAYER(wq)},
    {"model.layers.%d.self_attn.q_proj.bias", true, TENSOR_BIAS, DIM_QD, DIM_NONE, WHEN_QKV_BIAS, LAYER(bq)},
    {"model.layers.%d.self_attn.k_proj.weight", true, TENSOR_LINEAR, DIM_KVD, DIM_H, WHEN_ALWAYS, LAYER(wk)},
    {"model.layers.%d.self_attn.k_proj.bias", true, TENSOR_BIAS, DIM_KVD, DIM_NONE, WHEN_QKV_BIAS, LAYER(bk)},
    {"model.layers.%d.self_attn.v_proj.weight", true, TENSOR_LINEAR, DIM_KVD, DIM_H, WHEN_ALWAYS, LAYER(wv)},
    {"model.layers.%d.self_attn.v_proj.bias", true, TENSOR_BIAS, DIM_KVD, DIM_NONE, WHEN_QKV_BIAS, LAYER(bv)},
    {"model.layers.%d.self_attn.o_proj.weight", true, TENSOR_LINEAR, DIM_H, DIM_QD, WHEN_ALWAYS, LAYER(wo)},
    {"model.layers.%d.self_attn.q_norm.weight", true, TENSOR_NORM, DIM_HD, DIM_NONE, WHEN_QK_NORM, LAYER(q_norm)},
    {"model.layers.%d.self_attn.k_norm.weight", true, TENSOR_NORM, DIM_HD, DIM_NONE, WHEN_QK_NORM, LAYER(k_norm)},
    {"model.layers.%d.post_attention_layernorm.weight", true, TENSOR_NORM, DIM_H, DIM_NONE, WHEN_ALWAYS, LAYER(mlp_norm)},
    {"model.layers.%d.mlp.gate_proj.weight", true, TENSOR_LINEAR, DIM_I, DIM_H, WHEN_ALWAYS, LAYER(w_gate)},
    {"model.layers.%d.mlp.up_proj.weight", true, TENSOR_LINEAR, DIM_I, DIM_H, WHEN_ALWAYS, LAYER(w_up)},
    {"model.layers.%d.mlp.down_proj.weight", true, TENSOR_LINEAR, DIM_H, DIM_I, WHEN_ALWAYS, LAYER(w_down)},
    {"model.norm.weight", false, TENSOR_NORM, DIM_H, DIM_NONE, WHEN_ALWAYS, GLOBAL(final_norm)},
    {"lm_head.weight", false, TENSOR_LINEAR, DIM_V, DIM_H, WHEN_UNTIED, GLOBAL(lm_head)},
};
const int MODEL_N_SPECS = (int)(sizeof MODEL_SPECS / sizeof *MODEL_SPECS);

int64_t model_spec_dim(const model_config *c, model_dim d) {
    switch (d) {
    case DIM_NONE: return 0;
    case DIM_H: return c->hidden;
    case DIM_QD: return (int64_t)c->n_heads * c->head_dim;
    case DIM_KVD: return (int64_t)c->n_kv_heads * c->head_dim;
    case DIM_I: return c->intermediate;
    case DIM_V: return c->vocab;
    case DIM_HD: return c->head_dim;
    }
    return 0;
}

bool model_spec_applies(const model_config *c, const model_tensor_spec *sp) {
    const model_arch_desc *a = model_arch_of(c->arch);
    switch (sp->when) {
    case WHEN_ALWAYS: return true;
    case WHEN_QK_NORM: return a->qk_norm;
    case WHEN_QKV_BIAS: return a->qkv_bias;
    case WHEN_UNTIED: return !c->tie_embeddings;
    }
    return false;
}
