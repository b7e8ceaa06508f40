# Fails when a complete example in the README drifts from its file in examples/
# (EXAMPLE: quickstart.cpp, async_service.cpp), which the build compiles and the suite runs.
file(READ "${README}" readme)
file(READ "${EXAMPLE}" example)
string(FIND "${readme}" "```cpp\n${example}```" at)
if(at EQUAL -1)
  get_filename_component(name "${EXAMPLE}" NAME)
  message(FATAL_ERROR "README.md does not contain examples/${name} verbatim in a ```cpp block; "
                      "copy the example into its README section")
endif()
