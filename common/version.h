/* version.h - the release of nexus-sync, for --version and
 * nexus_build_info. */
#ifndef NS_VERSION_H
#define NS_VERSION_H

#define NEXUS_VERSION "0.1.0"

#endif
