/* fuzz_verify.c: libFuzzer target for the answer verifier (make fuzz). Input: response, NUL, answer (the answer
 * is empty when there is no NUL); the first byte's low bit picks the mode. Also checks that extraction and
 * normalisation hold their contracts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "text/verify.h"

static verify_result res;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 2);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    buf[size + 1] = '\0';
    const char *response = buf;
    const char *answer = buf + strlen(buf) + 1; /* "" when there is no NUL */
    verify_mode mode = (size > 0 && (data[0] & 1)) ? VERIFY_MODE_GSM8K : VERIFY_MODE_MATH;
    verify_answer(mode, response, answer, &res);
    if (res.correct && !res.has_extracted) abort();
    if (strlen(res.extracted) > VERIFY_MAX_ANSWER) abort();
    const char *s;
    size_t n;
    if (verify_extract_boxed(response, strlen(response), &s, &n) &&
        (s < response || s + n > response + strlen(response)))
        abort();
    char norm[2 * VERIFY_MAX_ANSWER + 64];
    if (verify_normalize(response, norm, sizeof norm) && strlen(norm) >= sizeof norm) abort();
    /* equivalence is reflexive for anything that normalises to something non-empty... only when it is
     * understood; it must at least never crash on either order */
    (void)verify_equivalent(answer, response);
    double v;
    (void)verify_eval(response, &v);
    free(buf);
    return 0;
}
