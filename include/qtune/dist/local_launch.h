#pragma once
// qtune train --nproc N: N ranks on this machine, started as torchrun starts them (copies of this binary with RANK,
// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT; OMP_NUM_THREADS = the
// cores divided among them unless set). The launcher trains nothing: it waits, forwards SIGINT/SIGTERM, and when a
// rank fails it gives the others `grace` to notice and report it, then stops them. Torch-free.
#include <chrono>
#include <string>
#include <vector>

namespace qtune::dist {

struct LocalLaunch {
  int nproc = 1;
  std::vector<std::string> args;  // this binary's arguments for every rank (without --nproc)
  // After a rank fails: how long the others may take to see it (a closed connection fails their collective at once;
  // a hung rank's peers fail on their timeout, which is itself a failure the launcher sees) and report it.
  std::chrono::seconds grace{10};
};

// The exit status: 0 when every rank exited 0; otherwise 1, with a line per failed rank on stderr.
int run_local_ranks(const LocalLaunch& launch);

// A TCP port on 127.0.0.1 that nothing listens on now.
int free_local_port();

// The cores this process may run on (its affinity mask).
int available_cores();

}  // namespace qtune::dist
