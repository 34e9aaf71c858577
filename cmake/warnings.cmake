# Warning flags for every target of the project: the build must stay warning-free with g++ 12 and
# clang 14. Third-party headers come in as SYSTEM includes, so they do not count.
function(darkbloom_target_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic
                                           -Wnon-virtual-dtor -Wno-missing-field-initializers)
  # GCC 12 mistakes the frame allocator of Asio's awaitable coroutines for a new/delete mismatch
  # when sanitizers are on.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    target_compile_options(${target} PRIVATE -Wno-mismatched-new-delete)
  endif()
  if(DARKBLOOM_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
