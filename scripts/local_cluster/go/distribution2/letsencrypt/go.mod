module rsc.io/letsencrypt

go 1.24.0
