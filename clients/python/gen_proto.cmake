# Generates the Python protobuf modules of proto/*.proto into OUT/einet_proto/ with protoc
# (Debian protobuf-compiler). The sources import each other as "proto/x.proto", which
# would make a Python package named `proto` - the name of Debian nanopb's own package - so
# they are copied under einet_proto/ with the imports rewritten first.
#   cmake -DSRC=<proto dir> -DOUT=<python dir> -DPROTOC=<protoc> -P gen_proto.cmake
file(GLOB protos "${SRC}/*.proto")
file(REMOVE_RECURSE "${OUT}/src")
set(rel)
foreach(p ${protos})
  get_filename_component(name ${p} NAME)
  file(READ ${p} text)
  string(REPLACE "import \"proto/" "import \"einet_proto/" text "${text}")
  file(WRITE "${OUT}/src/einet_proto/${name}" "${text}")
  list(APPEND rel einet_proto/${name})
endforeach()
file(MAKE_DIRECTORY "${OUT}/einet_proto")
execute_process(COMMAND ${PROTOC} -I "${OUT}/src" --python_out=${OUT} ${rel}
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "protoc failed on ${rel}")
endif()
file(WRITE "${OUT}/einet_proto/__init__.py"
     "# Generated from proto/*.proto at build time (clients/python/gen_proto.cmake); never committed.\n")
