/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	testcmd 3h - "portcullis test": one transaction through the chain, no network
 * DESCRIPTION
 *	The second door: main() hands it the arguments after "test".
 */
#ifndef PC_TESTCMD_H
#define PC_TESTCMD_H

/* pc_test_main - "portcullis test"; returns the exit status */
int pc_test_main(int argc, char **argv);

#endif
