module candor/bench/loadgen

go 1.21
