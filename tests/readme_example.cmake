# Fails when the README's complete example drifts from examples/quickstart.cpp,
# which the build compiles and the suite runs.
file(READ "${README}" readme)
file(READ "${EXAMPLE}" example)
string(FIND "${readme}" "```cpp\n${example}```" at)
if(at EQUAL -1)
  message(FATAL_ERROR "README.md does not contain examples/quickstart.cpp verbatim in a ```cpp block; "
                      "copy the example into the README's quick start")
endif()
