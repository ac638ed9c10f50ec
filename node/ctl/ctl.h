/* ternctl's commands that do not talk to the admin API. */
#ifndef TERN_CTL_H
#define TERN_CTL_H

/* ternctl passwd [--iterations N] FILE USER; returns the exit status. */
int ctl_passwd(int argc, char **argv);

#endif
