// placeholder: the web UI replaces this file
