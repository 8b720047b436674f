#pragma once
// OpenMP worker threads spin while they wait for work: libgomp's default is 300,000 spins before sleeping. When
// another process holds one of the cores, a spinning worker burns the time slices its peers need: on 2 cores one busy
// process cut training from 229 to 76 tokens/s. With 1,000 spins a worker still catches the back-to-back parallel
// regions of a step on a quiet machine (223 tokens/s) and sleeps soon beside a busy process (121): numbers in
// docs/PERFORMANCE.md, issue 36. libgomp reads the count once, when it is loaded, so it is chosen by running the
// binary again with GOMP_SPINCOUNT set.
#include <string>

namespace qtune {

// The spin count qtune gives the OpenMP runtime's waiting workers.
inline constexpr int kOmpSpinCount = 1000;

// Whether `command` runs the model and the environment leaves the wait to qtune: not when the user chose
// (OMP_WAIT_POLICY, GOMP_SPINCOUNT) or asked for the runtime's own long spin (QTUNE_OMP_WAIT=spin).
bool qtune_chooses_omp_wait(const std::string& command);

// Sets GOMP_SPINCOUNT and replaces this process with the same binary and arguments, when qtune_chooses_omp_wait
// says so; returns (and the run goes on with the runtime's default) if it cannot.
void choose_omp_wait(int argc, char** argv);

// How this process's OpenMP workers wait, as its environment told the runtime at load: "OMP_WAIT_POLICY=...",
// "GOMP_SPINCOUNT=..." or "default".
std::string omp_wait_setting();

}  // namespace qtune
