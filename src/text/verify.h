/* verify.h: the math answer verifier, i.e. the sparse reward (1 if the response's final answer is right).
 *
 * MATH mode (verify_math): the prediction is the content of the LAST \boxed{...} / \fbox{...} (braces
 * matched, nesting allowed) or of a "\boxed x" (space form, up to the next '$' or the end) in the response.
 * The reference is the answer string itself, or its last \boxed{} if it holds one (a full solution).
 * Both are normalised (verify_normalize: the Hendrycks MATH strip_string steps plus fixes for its known false
 * negatives) and compared by verify_equivalent:
 *   1. normalised strings equal, else
 *   2. structure: matrices (\begin{pmatrix}..) element-wise, tuples/intervals "(a,b)" "[a,b)" element-wise
 *      with the same brackets, sets "\{..\}", bare lists "a,b" and unions "A\cup B" order-insensitively,
 *      equations "lhs=rhs" side by side; elements are compared recursively by these same rules;
 *   3. scalars: both integer literals → exact digit comparison; otherwise both evaluated by a small
 *      recursive-descent evaluator (+ - * / ^ ! (), {}, \frac, \sqrt, \sqrt[n], \pi, \cdot, \times, \div,
 *      implicit multiplication, mixed numbers "1\frac{4}{5}", scientific notation, \sin \cos \tan \cot \sec
 *      \csc \ln \log \exp) and equal within relative tolerance 1e-6. Single-letter variables are allowed when
 *      both sides use the same set: then they must agree at three fixed generic points (polynomial identity).
 *   Anything the evaluator does not understand (\pm, \infty, words, subscripts, overflow such as 2004!) is
 *   never "equal by default": only the normalised string comparison of step 1 can accept it.
 *
 * GSM8K mode (verify_gsm8k): the reference is the number after the last "####" of the answer (or the whole
 * answer string); the prediction is the number after the last "####" in the response, else the last number
 * inside the last \boxed{} (an extension: chat models box their answers), else the last number in the response.
 * Commas, '$' and a trailing '.' are stripped; the two are compared numerically (integers exactly, others to a
 * relative 1e-6).
 *
 * Robustness: every function takes any NUL-terminated input (tested up to 100 KB; no recursion without a depth
 * limit, no backtracking, every loop bounded by the input length) and runs in well under 10 ms. Answers longer
 * than VERIFY_MAX_ANSWER bytes (extracted or reference) are never judged correct. Thread-safe (no globals). */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#define VERIFY_MAX_ANSWER 2048 /* longest answer (bytes) that is compared at all */

typedef struct {
    bool correct;                          /* the reward: 1 if correct */
    bool has_extracted;                    /* false: no \boxed{} (math) / no number (gsm8k) in the response */
    char extracted[VERIFY_MAX_ANSWER + 1]; /* the raw extracted answer, NUL-terminated; cut on a UTF-8
                                              boundary if longer (then correct is false) */
} verify_result;

typedef enum { VERIFY_MODE_MATH, VERIFY_MODE_GSM8K } verify_mode;

void verify_math(const char *response, const char *answer, verify_result *out);
void verify_gsm8k(const char *response, const char *answer, verify_result *out);
void verify_answer(verify_mode mode, const char *response, const char *answer, verify_result *out);
/* "math" / "gsm8k" → mode; false if unknown. */
bool verify_mode_parse(const char *name, verify_mode *mode);

/* ---- pieces, exported for tests ---- */

/* Span of the content of the last \boxed{..}, \fbox{..} or "\boxed x" in text[0..len). False if there is
 * none (or the last one is unbalanced). *start points into text. */
bool verify_extract_boxed(const char *text, size_t len, const char **start, size_t *n);
/* Normalises an answer into out (cap bytes); false if it does not fit (inputs over VERIFY_MAX_ANSWER). */
bool verify_normalize(const char *answer, char *out, size_t cap);
/* Are two answer strings (raw, not yet normalised) mathematically the same? */
bool verify_equivalent(const char *a, const char *b);
/* Evaluates a closed expression without variables (LaTeX subset above); false if not understood or not
 * finite. */
bool verify_eval(const char *expr, double *value);
/* The GSM8K prediction of a response (number with commas/'$' stripped) into out; false if none. */
bool verify_gsm8k_extract(const char *response, char *out, size_t cap);
