/* message_worker - syncs messages, message relationships and message context items (see schemas/mapping.cfg). */
#include "worker.h"

int main(int argc, char **argv)
{
    return worker_main(argc, argv, "message",
                       "messages, message relationships and message context items");
}
