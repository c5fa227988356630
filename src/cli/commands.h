/* commands.h: the s2d subcommands. Each returns the process exit status; bad input dies with a message. */
#pragma once

int cmd_init_model(int argc, char **argv); /* cli/cmd_model.c */
int cmd_logprobs(int argc, char **argv);   /* cli/cmd_model.c */
int cmd_generate(int argc, char **argv);   /* cli/cmd_generate.c */
int cmd_tokenize(int argc, char **argv);   /* cli/cmd_tokenize.c */
int cmd_verify(int argc, char **argv);     /* cli/cmd_verify.c */
int cmd_eval(int argc, char **argv);       /* cli/cmd_eval.c */
int cmd_train(int argc, char **argv);      /* cli/cmd_train.c */
int cmd_study(int argc, char **argv);      /* cli/cmd_study.c */
int cmd_export(int argc, char **argv);     /* cli/cmd_export.c */
int cmd_inspect(int argc, char **argv);    /* cli/cmd_inspect.c */
int cmd_plot(int argc, char **argv);       /* cli/cmd_plot.c */
int cmd_devices(int argc, char **argv);    /* cli/cmd_devices.c */
