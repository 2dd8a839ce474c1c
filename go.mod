module github.com/sessionvault/sessionvault

go 1.26
