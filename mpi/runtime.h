/* runtime.h: the MPI runtime of s2d (roles, communicators, the MPI transport). Only main.c includes this. */
#pragma once
#include "runtime/transport.h"

/* The transport factory main.c registers: MPI_Init (if needed), role of this rank from the layout
 * (rank 0 scheduler, then generators, scorers, learners), one communicator per group (MPI_Comm_split),
 * identity for die() and an abort hook that calls MPI_Abort. Dies with a message naming both sizes when
 * generators + scorers + learners + 1 != the world size. */
transport *mpi_transport_new(int generators, int scorers, int learners, double timeout_s, double heartbeat_s);
