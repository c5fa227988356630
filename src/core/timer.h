/* timer.h: monotonic wall clock and accumulating phase timers. */
#pragma once

double time_now(void);          /* seconds, monotonic */
double time_since_start(void);  /* seconds since the first call of any timer function */

typedef struct {
    double total;   /* accumulated seconds */
    double started; /* time_now() at timer_start, < 0 when stopped */
    long count;
} phase_timer;

void timer_start(phase_timer *t);
void timer_stop(phase_timer *t);
