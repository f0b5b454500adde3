module example.com/keygate

go 1.19
