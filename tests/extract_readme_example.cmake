# Writes the C++ code between "<!-- example -->" and "<!-- /example -->" in IN to OUT,
# without the ``` fences.
file(READ ${IN} _text)
string(FIND "${_text}" "<!-- example -->" _begin)
string(FIND "${_text}" "<!-- /example -->" _end)
if(_begin EQUAL -1 OR _end EQUAL -1)
  message(FATAL_ERROR "README.md has no <!-- example --> block")
endif()
math(EXPR _begin "${_begin} + 16")
math(EXPR _len "${_end} - ${_begin}")
string(SUBSTRING "${_text}" ${_begin} ${_len} _code)
string(REPLACE "```cpp" "" _code "${_code}")
string(REPLACE "```" "" _code "${_code}")
file(WRITE ${OUT} "${_code}")
