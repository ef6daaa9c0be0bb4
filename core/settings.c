/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	settings 3 - reference count of a configuration generation
 * DESCRIPTION
 *	See core/settings.h: the generation's owner (gateway/conf.c) sets
 *	release; the core only counts.
 */
#include "core/settings.h"

/* pc_settings_ref - one more user of the generation */
void pc_settings_ref(struct pc_settings *s)
{
    s->refs++;
}

/* pc_settings_unref - the last user releases the generation */
void pc_settings_unref(struct pc_settings *s)
{
    if (--s->refs == 0 && s->release)
        s->release(s);
}
