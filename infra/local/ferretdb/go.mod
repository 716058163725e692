module chatbus.local/ferretdb-tool

go 1.24
