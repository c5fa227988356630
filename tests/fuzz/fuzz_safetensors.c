/* fuzz_safetensors.c: libFuzzer target for the safetensors parser (make fuzz). The input is a whole file. An
 * accepted file must hold only tensors whose bytes lie inside it and whose sizes match their shapes, and every
 * float tensor must convert; a rejected one must come with a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_set *set = NULL;
    s2d_err err = {{0}};
    if (!st_open_memory(data, size, "fuzz", &set, &err)) {
        if (err.msg[0] == '\0') abort(); /* every rejection says why */
        return 0;
    }
    for (int i = 0; i < st_count(set); i++) {
        const st_tensor *t = st_at(set, i);
        const uint8_t *p = t->data;
        if (t->nbytes && (p < data || p + t->nbytes > data + size)) abort();
        if ((size_t)t->numel * st_dtype_size(t->dtype) != t->nbytes) abort();
        if (st_find(set, t->name) != t) abort();
        if ((t->dtype == ST_F32 || t->dtype == ST_BF16 || t->dtype == ST_F16) && t->numel <= (1 << 16)) {
            float *out = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
            if (!out) return 0;
            if (!st_read_f32(t, out, (size_t)t->numel, &err)) abort();
            free(out);
        }
    }
    st_close(set);
    return 0;
}
