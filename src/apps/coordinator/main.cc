// darkbloom-coordinator: the network's front door. The network issue builds it; until then the
// binary says so plainly instead of pretending to serve.
#include <CLI/CLI.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  CLI::App app{"darkbloom-coordinator: OpenAI-compatible front door of the Darkbloom network (not built yet)",
               "darkbloom-coordinator"};
  app.set_version_flag("--version", "darkbloom-coordinator 0.1.0");
  CLI11_PARSE(app, argc, argv);
  std::fprintf(stderr, "darkbloom-coordinator: error: the coordinator is not implemented in this version\n");
  return 1;
}
