/* org_worker - syncs tenants, users, programs, projects and project memberships (see schemas/mapping.cfg). */
#include "worker.h"

int main(int argc, char **argv)
{
    return worker_main(argc, argv, "org",
                       "tenants, users, programs, projects and project memberships");
}
