/* timer.h: monotonic wall clock. */
#pragma once

double time_now(void);          /* seconds, monotonic */
double time_since_start(void);  /* seconds since the first call of any timer function */
